"""Scale invariance and weight decay (:mod:`bnviz.experiments.weight_decay`): weight norms and the
effective learning rate with and without weight decay, and the "x k weights" check."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import plotly.graph_objects as go

from .. import seeds
from ..config import Config, problems
from ..data import load
from ..experiments import weight_decay as wd
from ..figures import weight_decay as figs
from ..train import Run, build_for
from . import View, seeded
from .settings import snap

DEFAULT = Config(steps=500, width=64, batch_size=32, lr=0.1, eval_every=100)
Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Settings:
    decay: float = 5e-3      # the weight decay compared with none
    factor: float = 10.0     # the "x k weights" check's k


OPTIONS: dict[str, tuple[float, ...]] = {"decay": (1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2),
                                         "factor": (0.1, 2.0, 10.0, 100.0)}


def coerce(name: str, raw: Any) -> tuple[float, str | None]:
    value, note = snap(name, raw, getattr(Settings(), name), OPTIONS[name])
    return float(value), note


def runs(config: Config) -> dict[str, Config]:
    return {}


def network(config: Config) -> Config:
    """The page's network: BN right after every hidden weight layer (the scale-invariant ones)."""
    return config.replace(norm="batchnorm", placement="before", bias_with_norm=False)


def check(config: Config) -> list[str]:
    return problems(network(config))


def compare(config: Config, decay: float, progress: Report | None = None) -> list[wd.NormRun]:
    return wd.compare(network(config), decay, progress)


def scale_check(config: Config, factor: float) -> wd.ScaleCheck:
    """The check on the initial network and the first training batch of ``config``."""
    data = load(config)
    model, _, stream = build_for(network(config), data)
    x, y = next(stream)
    return wd.scale_check(model, x, y, factor)


RUNS_PER_SEED = 2


def seed_summary(results: Sequence[Sequence[wd.NormRun]], seed_list: Sequence[int]) -> seeds.SeedSummary:
    """Over seeds: final test accuracy with and without weight decay, paired."""
    values: dict[str, list[float]] = {}
    for runs_of_seed in results:
        for run in runs_of_seed:
            values.setdefault(run.label, []).append(float(run.test_acc[-1]))
    labels = list(values)
    return seeded.summarize(values, seed_list, [(labels[1], labels[0])])


def make_figures(config: Config, trained: Mapping[str, Run], settings: Settings = Settings(),
                 progress: Report | None = None) -> dict[str, go.Figure]:
    result = compare(config, settings.decay, progress)
    return {"weight norms": figs.norms_and_effective_lr(result), "test accuracy": figs.test_accuracy(result)}


VIEW = View(slug="weight_decay", title="Weight decay and BN", default=DEFAULT, runs=runs, figures=make_figures)
