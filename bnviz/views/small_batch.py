"""Small-batch remedies: BatchNorm, Batch Renorm, Ghost BN and GroupNorm + Weight Standardization on
the batch-size sweep and on two-class batches (:mod:`bnviz.experiments.small_batch`).

Nothing here is a plain :func:`bnviz.train.train` run (the layers are swapped), so ``runs`` is
empty and :func:`study` trains everything; the page calls it through ``ui.computed`` (cached, with
progress).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import plotly.graph_objects as go

from .. import seeds
from ..config import Config, problems
from ..experiments import small_batch as sb
from ..figures import small_batch as figs
from ..train import Run
from . import View, seeded
from .settings import snap

DEFAULT = Config(steps=300, width=64, batch_size=8, eval_every=50)
Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Settings:
    """The remedies' knobs (not Config fields), kept in the URL."""

    ghost_size: int = 4      # Ghost BN: samples per ghost batch
    r_max: float = 3.0       # Batch Renorm: final limit of r, in [1/r_max, r_max]
    d_max: float = 5.0       # Batch Renorm: final limit of d, in [-d_max, d_max]

    def remedies(self) -> list[sb.Remedy]:
        return [sb.Remedy(kind, ghost_size=self.ghost_size, r_max=self.r_max, d_max=self.d_max)
                for kind in sb.REMEDIES]


OPTIONS: dict[str, tuple[float, ...]] = {
    "ghost_size": (2, 4, 8, 16),
    "r_max": (1.0, 1.5, 2.0, 3.0, 5.0),
    "d_max": (0.0, 0.5, 1.0, 2.5, 5.0),
}


def coerce(name: str, raw: Any) -> tuple[float, str | None]:
    """A setting from the URL or a widget, snapped to what the control offers; never raises."""
    value, note = snap(name, raw, getattr(Settings(), name), OPTIONS[name])
    return (int(value) if name == "ghost_size" else float(value)), note


def runs(config: Config) -> dict[str, Config]:
    return {}


def check(config: Config) -> list[str]:
    """Why the page cannot train ``config`` (BN needs 2 samples per batch), or []."""
    return problems(config.replace(norm="batchnorm"))


def study(config: Config, settings: Settings, progress: Report | None = None) -> sb.RemedyStudy:
    return sb.study(config, settings.remedies(), sb.DEFAULT_BATCH_SIZES, progress)


def runs_per_seed(config: Config) -> int:
    """Networks :func:`study` trains for one seed."""
    extra = 2 if config.batch_size not in sb.DEFAULT_BATCH_SIZES else 1
    return len(sb.REMEDIES) * (len(sb.DEFAULT_BATCH_SIZES) + extra)


def seed_summary(results: Sequence[sb.RemedyStudy], seed_list: Sequence[int]) -> seeds.SeedSummary:
    """Over seeds: each normalization's final accuracy on two-class batches, each remedy against BN."""
    values: dict[str, list[float]] = {}
    for result in results:
        for run in result.two_class:
            if run.sampling == "two-class":
                values.setdefault(f"{run.label}, two-class", []).append(run.final_acc)
    labels = list(values)
    return seeded.summarize(values, seed_list, [(label, labels[0]) for label in labels[1:]])


def make_figures(config: Config, trained: Mapping[str, Run], settings: Settings = Settings(),
                 progress: Report | None = None) -> dict[str, go.Figure]:
    result = study(config, settings, progress)
    return {"remedies by batch size": figs.sweep(result), "two-class batches": figs.two_class(result),
            "batch renorm corrections": figs.renorm_factors(result)}


VIEW = View(slug="small_batch", title="Small-batch remedies", default=DEFAULT, runs=runs, figures=make_figures)
