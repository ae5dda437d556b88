"""BN across devices: DistributedDataParallel in 2-4 CPU processes, plain vs synchronized BN
(:mod:`bnviz.experiments.data_parallel`). The job is started and torn down by :func:`study`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import plotly.graph_objects as go

from .. import seeds
from ..config import Config, problems
from ..data import load
from ..experiments import data_parallel as dp
from ..figures import data_parallel as figs
from ..train import Run
from . import View, seeded
from .settings import snap

DEFAULT = Config(steps=200, width=64, batch_size=4, eval_every=50, record_every=5)
Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Settings:
    processes: int = 2       # world size
    channel: int = 0         # display: the channel whose running mean is drawn


OPTIONS: dict[str, Any] = {"processes": range(1, dp.MAX_WORLD + 1), "channel": range(0, figs.SHOWN_CHANNELS)}


def coerce(name: str, raw: Any) -> tuple[int, str | None]:
    value, note = snap(name, raw, getattr(Settings(), name), OPTIONS[name])
    return int(value), note


def runs(config: Config) -> dict[str, Config]:
    return {}


def check(config: Config, processes: int) -> list[str]:
    return problems(config.replace(norm="batchnorm")) or dp.problems(config, processes)


def study(config: Config, processes: int, progress: Report | None = None) -> dp.Study:
    """The job; the data set is loaded here first, so a missing one is reported as such, not as a
    worker's failure."""
    load(config)
    return dp.run(config, processes, dp.DEFAULT_PER_DEVICE, progress)


def runs_per_seed(config: Config, processes: int) -> int:
    """Networks one job trains, counted once per process (each process trains every variant)."""
    return processes * len(dp.variants_for(config.batch_size, dp.DEFAULT_PER_DEVICE))


def seed_summary(results: Sequence[dp.Study], seed_list: Sequence[int]) -> seeds.SeedSummary:
    """Over seeds (one job each): rank 0's final accuracy at the page's per-device batch, plain
    against synchronized BN."""
    values: dict[str, list[float]] = {}
    for study_of_seed in results:
        for mode in dp.MODES:
            variant = dp.Variant(mode, study_of_seed.config.batch_size)
            values.setdefault(variant.label, []).append(study_of_seed.accuracy(variant))
    labels = list(values)
    return seeded.summarize(values, seed_list, [(labels[1], labels[0])])


def make_figures(config: Config, trained: Mapping[str, Run], settings: Settings = Settings(),
                 progress: Report | None = None) -> dict[str, go.Figure]:
    result = study(config, settings.processes, progress)
    return {"accuracy by per-device batch": figs.accuracy_by_per_device(result),
            "batch statistics per process": figs.batch_statistics(result, config.batch_size),
            "running statistics per process": figs.running_statistics(result, config.batch_size, settings.channel)}


VIEW = View(slug="data_parallel", title="BN across devices", default=DEFAULT, runs=runs, figures=make_figures)
