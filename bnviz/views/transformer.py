"""Transformers: Post-LN vs Pre-LN, warm-up, RMSNorm and DyT, on a tiny transformer that learns to sort.

Not plain :func:`bnviz.train.train` runs (``runs`` is empty): :func:`init_gradients` (one step per
variant: the page's first figure), :func:`trained` (with and without warm-up), and the
computations on one vector and on a trained network's LayerNorm (:mod:`bnviz.experiments.transformer`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import plotly.graph_objects as go

from ..config import Config
from ..experiments import transformer as experiment
from ..figures import transformer as figs
from ..tiny_transformer import VARIANTS
from ..train import Run
from . import View
from .settings import snap

DEFAULT = Config(steps=300, lr=0.03, optimizer="adam", batch_size=64, eval_every=25)
LAYERS = (1, 2, 3, 4, 6)
WARMUPS = (10, 30, 60, 100, 150)
SHIFTS = (-3.0, -1.0, 0.0, 1.0, 3.0, 10.0)
SCALES = (0.1, 0.5, 1.0, 2.0, 5.0, -1.0)

Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Settings:
    """The page's experiment settings (not Config fields), kept in the URL."""

    layers: int = 3
    warmup: int = 60
    all_variants: bool = False   # also train RMSNorm, DyT and no normalization


OPTIONS = {"layers": LAYERS, "warmup": WARMUPS}


def coerce(name: str, raw: Any) -> tuple[Any, str | None]:
    """A setting from the URL or a widget as its control can show it, and a note; never raises."""
    if name == "all_variants":
        return bool(raw) if isinstance(raw, (bool, int)) else Settings.all_variants, None
    value, note = snap(name, raw, getattr(Settings(), name), OPTIONS[name])
    return int(value), note


def trained_variants(all_variants: bool) -> tuple[str, ...]:
    return tuple(VARIANTS) if all_variants else experiment.MAIN


def runs(config: Config) -> dict[str, Config]:
    return {}


def init_gradients(config: Config, layers: int, progress: Report | None = None) -> dict[str, np.ndarray]:
    return experiment.gradients_at_init(config, layers)


def trained(config: Config, layers: int, warmup: int, all_variants: bool,
            progress: Report | None = None) -> dict[str, experiment.TransformerRun]:
    return experiment.train_variants(config, layers, warmup, trained_variants(all_variants), progress)


# Work a page asks for at most, in layer-steps (one block for one step): ~1-2 minutes on two busy
# cores. 1 seed is always trained.
WORK_BUDGET = 30_000


def seeds_within_budget(config: Config, layers: int, all_variants: bool, n_seeds: int) -> int:
    """How many of ``n_seeds`` seeds the page trains: as many as :data:`WORK_BUDGET` allows, at least one."""
    per_seed = 2 * len(trained_variants(all_variants)) * layers * config.steps
    return max(1, min(n_seeds, WORK_BUDGET // per_seed))


def run_job(config: Config, variant: str, layers: int, warmup: int, report: Any = None) -> experiment.TransformerRun:
    """One variant trained (a job of :func:`bnviz.ui.computed_many`: one worker process each)."""
    return experiment.train_one(config, variant, layers, warmup)


def jobs(config: Config, layers: int, warmup: int, all_variants: bool, n_seeds: int) -> tuple[list[str], list[tuple]]:
    """The run labels and every run at ``n_seeds`` seeds (the page's seed first), seed by seed."""
    runs_of_a_seed = [(v, w) for w in (0, warmup) for v in trained_variants(all_variants)]
    labels = [experiment.run_label(v, w) for v, w in runs_of_a_seed]
    return labels, [(config.replace(seed=config.seed + k), v, layers, w) for k in range(n_seeds)
                    for v, w in runs_of_a_seed]


def layernorm_runs(trained_runs: Mapping[str, experiment.TransformerRun]) -> list[str]:
    """The trained runs whose norm is LayerNorm (the scatter's sources)."""
    return [label for label, run in trained_runs.items() if VARIANTS[run.variant][0] == "layernorm"]


def scatters(config: Config, run: experiment.TransformerRun) -> list[experiment.Scatter]:
    """``run``'s norm layers on the first 64 training sequences."""
    return experiment.normalization_scatter(run.model, experiment.task(config).x_train[:64])


def gradients_figure(norms: Mapping[str, np.ndarray]) -> go.Figure:
    return figs.gradients_at_init(norms)


def vector_figure(shift: float, scale: float) -> go.Figure:
    return figs.one_vector(experiment.one_vector(shift, scale), shift, scale)


def warmup_figure(trained_runs: Mapping[str, experiment.TransformerRun]) -> go.Figure:
    return figs.warmup(trained_runs)


def scatter_figure(scatter: experiment.Scatter) -> go.Figure:
    return figs.normalization_scatter(scatter, experiment.fit_tanh(scatter.x, scatter.x_hat))


def make_figures(config: Config, _: Mapping[str, Run], settings: Settings = Settings(),
                 progress: Report | None = None) -> dict[str, go.Figure]:
    """The page's four figures at ``settings`` (one vector at shift 1, scale 2; the scatter of the
    Pre-LN network trained with warm-up, its last block's first norm)."""
    trained_runs = trained(config, settings.layers, settings.warmup, settings.all_variants, progress)
    last = [s for s in scatters(config, trained_runs[experiment.run_label("Pre-LN", settings.warmup)])
            if s.name.endswith("norm1")][-1]
    return {
        "transformer gradients at initialization": gradients_figure(init_gradients(config, settings.layers)),
        "layernorm vs rmsnorm on one vector": vector_figure(1.0, 2.0),
        "training with and without warm-up": warmup_figure(trained_runs),
        "layernorm input vs output": scatter_figure(last),
    }


def first_figure(config: Config) -> go.Figure:
    """What the page draws first, at the default settings (one step per variant): for ``make bench``."""
    return gradients_figure(init_gradients(config, Settings.layers))


VIEW = View(slug="transformer", title="Transformers", default=DEFAULT, runs=runs, figures=make_figures)
