"""Home: the same network trained with and without normalization."""
from __future__ import annotations

from typing import Mapping

import plotly.graph_objects as go

from .. import figures
from ..config import Config
from ..train import Run
from . import View


def runs(config: Config) -> dict[str, Config]:
    if not config.has_norm:  # the comparison run would be the same network twice
        return {"without normalization": config}
    return {f"with {config.norm}": config, "without normalization": config.without_norm()}


def make_figures(config: Config, trained: Mapping[str, Run]) -> dict[str, go.Figure]:
    return {"training with and without BN": figures.training_curves({k: r.history for k, r in trained.items()})}


VIEW = View(slug="home", title="Training with and without BN", default=Config(), runs=runs, figures=make_figures)
