"""Home: the same network trained with and without normalization."""
from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

from .. import figures
from ..figures import seeds as seed_figs
from ..config import Config
from ..train import Run
from . import View


def runs(config: Config) -> dict[str, Config]:
    if not config.has_norm:  # the comparison run would be the same network twice
        return {"without normalization": config}
    return {f"with {config.norm}": config, "without normalization": config.without_norm()}


def make_figures(config: Config, trained: Mapping[str, Run],
                 over_seeds: Mapping[str, Sequence[Run]] | None = None) -> dict[str, go.Figure]:
    """The training curves; with runs at several seeds (``over_seeds[label]``, one per seed) their
    mean and 95 % band."""
    name = "training with and without BN"
    if over_seeds and max(len(rs) for rs in over_seeds.values()) > 1:
        return {name: seed_figs.training_curves({k: [r.history for r in rs] for k, rs in over_seeds.items()})}
    return {name: figures.training_curves({k: r.history for k, r in trained.items()})}


VIEW = View(slug="home", title="Training with and without BN", default=Config(), runs=runs, figures=make_figures)
