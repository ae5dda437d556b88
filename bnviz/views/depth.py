"""Gradients at initialization vs depth: BN-ReLU MLPs explode gradients toward the input (Yang et al. 2019).

Not a plain :func:`bnviz.train.train` run (``runs`` is empty): :func:`init_runs` takes one step of
each network (its gradients at initialization, the page's first figure), :func:`trained` the full
``config.steps`` (:mod:`bnviz.experiments.depth_gradients`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import plotly.graph_objects as go

from ..config import Config
from ..experiments import depth_gradients as experiment
from ..figures import depth as figs
from ..train import Run
from . import View
from .settings import snap

DEFAULT = Config(steps=100, width=100, lr=0.05, eval_every=25)
DEPTHS = (5, 10, 20, 30, 50)
SHOWN_STEPS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Settings:
    """The page's experiment setting (not a Config field: Config.depth stops at 10), in the URL."""

    depth: int = 30


def coerce(name: str, raw: Any) -> tuple[Any, str | None]:
    value, note = snap(name, raw, Settings.depth, DEPTHS)
    return int(value), note


def steps_offered(config: Config) -> list[int]:
    """The steps whose gradients the step control offers: those the run reaches."""
    return [s for s in SHOWN_STEPS if s < config.steps]


def runs(config: Config) -> dict[str, Config]:
    return {}


def init_runs(config: Config, depth: int, progress: Report | None = None) -> dict[str, experiment.GradientRun]:
    return experiment.at_init(config, depth)


def trained(config: Config, depth: int, progress: Report | None = None) -> dict[str, experiment.GradientRun]:
    return experiment.train_all(config, depth, progress)


def norms_figure(gradient_runs: Mapping[str, experiment.GradientRun], step: int) -> go.Figure:
    return figs.gradient_norms(gradient_runs, step)


def growth_figure(gradient_runs: Mapping[str, experiment.GradientRun]) -> go.Figure:
    return figs.growth_over_steps(gradient_runs)


def make_figures(config: Config, _: Mapping[str, Run], settings: Settings = Settings(),
                 progress: Report | None = None) -> dict[str, go.Figure]:
    """The page's figures at ``settings``; the trained one at the last step the control offers."""
    at_init = init_runs(config, settings.depth)
    full = trained(config, settings.depth, progress)
    return {
        "gradient norm per layer at initialization": norms_figure(at_init, 0),
        "gradient norm per layer after training steps": norms_figure(full, steps_offered(config)[-1]),
        "gradient growth over training steps": growth_figure(full),
    }


def first_figure(config: Config) -> go.Figure:
    """What the page draws first, at the default settings (one step per network): for ``make bench``."""
    return norms_figure(init_runs(config, Settings.depth), 0)


VIEW = View(slug="depth", title="Gradients vs depth", default=DEFAULT, runs=runs, figures=make_figures)
