"""Gradient accumulation: a batch trained as k micro-batches, for BatchNorm, GroupNorm and LayerNorm
(:mod:`bnviz.experiments.grad_accumulation`). Trained by :func:`compare` (``runs`` is empty)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import plotly.graph_objects as go

from .. import seeds
from ..config import Config, problems
from ..experiments import grad_accumulation as ga
from ..figures import grad_accumulation as figs
from ..train import Run
from . import View, seeded
from .settings import snap

DEFAULT = Config(steps=300, width=64, batch_size=64, eval_every=50)
Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Settings:
    micro_batches: int = 8   # k: micro-batches each batch is cut into


OPTIONS: dict[str, tuple[int, ...]] = {"micro_batches": (2, 4, 8, 16, 32)}


def coerce(name: str, raw: Any) -> tuple[int, str | None]:
    value, note = snap(name, raw, getattr(Settings(), name), OPTIONS[name])
    return int(value), note


def runs(config: Config) -> dict[str, Config]:
    return {}


def check(config: Config, settings: Settings) -> list[str]:
    return problems(config.replace(norm="batchnorm")) or ga.problems(config, settings.micro_batches)


def compare(config: Config, micro_batches: int, progress: Report | None = None) -> list[ga.AccumulationRun]:
    return ga.compare(config, micro_batches, progress=progress)


RUNS_PER_SEED = 2 * len(ga.NORMS)


def seed_summary(results: Sequence[Sequence[ga.AccumulationRun]], seed_list: Sequence[int]) -> seeds.SeedSummary:
    """Over seeds: each run's final accuracy; per normalization, accumulated against the true batch."""
    values: dict[str, list[float]] = {}
    for runs_of_seed in results:
        for run in runs_of_seed:
            values.setdefault(run.label, []).append(run.final_acc)
    labels = list(values)
    return seeded.summarize(values, seed_list, list(zip(labels[1::2], labels[0::2])))


def make_figures(config: Config, trained: Mapping[str, Run], settings: Settings = Settings(),
                 progress: Report | None = None) -> dict[str, go.Figure]:
    result = compare(config, settings.micro_batches, progress)
    return {"test accuracy": figs.test_accuracy(result), "final accuracy": figs.final_accuracy(result),
            "noise of BN statistics": figs.statistics_noise(result)}


VIEW = View(slug="grad_accumulation", title="Gradient accumulation", default=DEFAULT, runs=runs,
            figures=make_figures)
