"""Residual networks: where BN sits in a block, and what the skip path does to it (De & Smith 2020).

Two computations, neither a plain :func:`bnviz.train.train` run (so ``runs`` is empty):

* :func:`init_variances`: one recorded forward pass per variant at initialization (fast: the
  page's first figure);
* :func:`trained`: every variant trained with the page's seed, batches and steps, its branch and
  skip variances recorded along the way (:mod:`bnviz.experiments.residual`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import plotly.graph_objects as go

from ..config import Config
from ..experiments import residual
from ..figures import residual as figs
from .. import seeds
from ..seeds import SeedSummary
from ..train import Curves, Run
from . import View
from .settings import snap

DEFAULT = Config(steps=300, width=64, lr=0.05, eval_every=25)
BLOCKS = (2, 4, 8, 16, 32)

Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Settings:
    """The page's experiment settings (not Config fields), kept in the URL."""

    blocks: int = 8              # residual blocks
    zero_gamma: bool = False     # the last BN of each branch starts with gamma = 0 (Goyal et al.)


def coerce(name: str, raw: Any) -> tuple[Any, str | None]:
    """A setting from the URL or a widget as its control can show it, and a note; never raises."""
    if name == "zero_gamma":
        return bool(raw) if isinstance(raw, (bool, int)) else Settings.zero_gamma, None
    value, note = snap(name, raw, Settings.blocks, BLOCKS)
    return int(value), note


CNN_MAX_BLOCKS = 8   # a deeper CNN-ResNet takes minutes per variant on two cores


def blocks_for(config: Config, blocks: int) -> int:
    """The blocks the page trains: ``blocks``, at most :data:`CNN_MAX_BLOCKS` for the CNN-ResNet."""
    return min(blocks, CNN_MAX_BLOCKS) if config.arch == "cnn" else blocks


def runs(config: Config) -> dict[str, Config]:
    return {}


def init_variances(config: Config, blocks: int, zero_gamma: bool,
                   progress: Report | None = None) -> dict[str, residual.BlockVariances]:
    return residual.at_init(config, blocks, zero_gamma)


def trained(config: Config, blocks: int, zero_gamma: bool,
            progress: Report | None = None) -> dict[str, residual.ResidualRun]:
    return residual.train_all(config, blocks, zero_gamma, progress)


# Work a page asks for at most, in block-steps (a block of 64 units for one step; wider MLP blocks
# count width / 64, a CNN block 5): ~1-2 minutes on two busy cores. 1 seed is always trained.
WORK_BUDGET = 100_000


def seeds_within_budget(config: Config, blocks: int, zero_gamma: bool, n_seeds: int) -> int:
    """How many of ``n_seeds`` seeds the page trains: as many as :data:`WORK_BUDGET` allows, at least one."""
    weight = 5 if config.arch == "cnn" else max(1.0, config.width / 64)
    per_seed = len(residual.variants(zero_gamma)) * blocks * config.steps * weight
    return max(1, min(n_seeds, int(WORK_BUDGET // per_seed)))


def variant_job(config: Config, label: str, blocks: int, zero_gamma: bool, report: Any = None) -> residual.ResidualRun:
    """One variant trained (a job of :func:`bnviz.ui.computed_many`: one worker process each)."""
    style, zero = residual.variants(zero_gamma)[label]
    return residual.train_variant(config, label, style, zero, blocks)


def jobs(config: Config, blocks: int, zero_gamma: bool, n_seeds: int) -> list[tuple]:
    """Every variant at ``n_seeds`` seeds (the page's seed first), seed by seed."""
    return [(config.replace(seed=config.seed + k), label, blocks, zero_gamma)
            for k in range(n_seeds) for label in residual.variants(zero_gamma)]


def by_seed(results: Sequence[Any], labels: Sequence[str], n_seeds: int) -> list[dict[str, Any]]:
    """The results of :func:`jobs` (or the transformer view's) as one {label: result} per seed."""
    return [dict(zip(labels, results[k * len(labels):(k + 1) * len(labels)])) for k in range(n_seeds)]


def final_accuracy(curves: Curves) -> float:
    """Eval-mode test accuracy after the last update; NaN for a run that diverged."""
    return math.nan if curves.diverged_at is not None else float(curves.test_acc[-1])


def summarize(over_seeds: Sequence[Mapping[str, Curves]], first_seed: int) -> SeedSummary:
    """Headline accuracies over seeds and verdicts paired by seed (bnviz.seeds), from the curves of
    each seed's runs ``over_seeds[k][label]``."""
    labels = list(over_seeds[0])
    values = {label: [final_accuracy(runs[label]) for runs in over_seeds] for label in labels}
    verdicts = [seeds.verdict(a, b, seeds.paired_difference(values[a], values[b]).scaled(100.0))
                for a, b in seeds.default_pairs(labels)]
    return SeedSummary(seeds=tuple(first_seed + k for k in range(len(over_seeds))),
                       headlines={k: seeds.headline(v, bounds=seeds.ACCURACY) for k, v in values.items()},
                       intervals={k: seeds.mean_interval(v).scaled(100.0) for k, v in values.items()},
                       verdicts=verdicts)


def init_figure(measured: Mapping[str, residual.BlockVariances]) -> go.Figure:
    return figs.variance_at_init(measured)


def ratio_figure(trained_runs: Mapping[str, residual.ResidualRun], step: int) -> go.Figure:
    return figs.ratio_during_training(trained_runs, step)


def curves_figure(trained_runs: Mapping[str, residual.ResidualRun]) -> go.Figure:
    return figs.training_curves(trained_runs)


def make_figures(config: Config, _: Mapping[str, Run], settings: Settings = Settings(),
                 progress: Report | None = None) -> dict[str, go.Figure]:
    """The page's three figures at ``settings``, the training one at the last recorded step."""
    blocks = blocks_for(config, settings.blocks)
    trained_runs = trained(config, blocks, settings.zero_gamma, progress)
    last = max(r.recorded[-1].step for r in trained_runs.values())
    return {
        "branch and skip variance at initialization": init_figure(
            init_variances(config, blocks, settings.zero_gamma)),
        "branch over skip during training": ratio_figure(trained_runs, last),
        "residual training curves": curves_figure(trained_runs),
    }


def first_figure(config: Config) -> go.Figure:
    """What the page draws first, at the default settings (no training): for ``make bench``."""
    return init_figure(init_variances(config, blocks_for(config, Settings.blocks), Settings.zero_gamma))


VIEW = View(slug="residual", title="Residual networks", default=DEFAULT, runs=runs, figures=make_figures)
