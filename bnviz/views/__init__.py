"""What each page of the app computes and draws, without Streamlit.

A page script (``pages/*.py``) owns its controls and layout; the matching module here owns what to
train and which figures to draw, as a :class:`View`. The headless export command
(``python -m bnviz export``) and the tests use the same View, so a PNG exported from the command
line is the one the page shows.

Each module in this package defines ``VIEW``; :func:`registry` finds them.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Mapping

import plotly.graph_objects as go

from ..config import Config
from ..train import ProgressFn, Run, train


@dataclass(frozen=True)
class View:
    slug: str                                            # URL-safe name, e.g. "histograms"
    title: str
    default: Config                                      # the page's default configuration
    runs: Callable[[Config], dict[str, Config]]          # label -> config to train ({} if none)
    figures: Callable[[Config, Mapping[str, Run]], dict[str, go.Figure]]  # name -> figure, default view


def registry() -> dict[str, View]:
    """Every view, by slug, in page order."""
    views = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "VIEW"):
            views.append(module.VIEW)
    return {v.slug: v for v in views}


def render(view: View, config: Config, progress: ProgressFn | None = None) -> dict[str, go.Figure]:
    """Train what ``view`` needs for ``config`` and return its figures (for export and tests)."""
    runs = {label: train(cfg, progress) for label, cfg in view.runs(config).items()}
    return view.figures(config, runs)
