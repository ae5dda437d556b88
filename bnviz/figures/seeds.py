"""Curves over several seeds: the mean as a line, the 95 % t-interval as a band around it.

``histories[label]`` holds one History per seed, the same seeds for every label (see
:mod:`bnviz.seeds`). A band is drawn where at least two seeds reached a step; a seed that diverged
stops contributing where its record stops.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..record import History
from ..seeds import ACCURACY, Band, band
from .common import color, rgba, styled, subplots


def add_band(fig: go.Figure, b: Band, *, name: str, c: str, row: int | None = None, col: int | None = None,
             showlegend: bool = True, mode: str = "lines") -> None:
    """The band (a filled polygon from the upper edge and the lower edge reversed) and the mean line."""
    has = np.isfinite(b.low) & np.isfinite(b.high)
    where = dict(row=row, col=col) if row is not None else {}
    if has.any():
        x = b.steps[has]
        fig.add_scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([b.high[has], b.low[has][::-1]]),
                        fill="toself", fillcolor=rgba(c, 0.2), line=dict(width=0), hoverinfo="skip",
                        name=f"{name}: 95 % CI", legendgroup=name, showlegend=False, meta="band", **where)
    fig.add_scatter(x=b.steps, y=b.mean, name=name, line=dict(color=c, width=2), mode=mode, legendgroup=name,
                    showlegend=showlegend, meta="mean", customdata=b.n,
                    hovertemplate="%{y:.4g} (mean of %{customdata} seeds)<extra>" + name + "</extra>", **where)


def loss_band(histories: Sequence[History]) -> Band:
    return band([h.loss_curve()[:2] for h in histories])


def eval_band(histories: Sequence[History], key: str = "test_acc") -> Band:
    return band([h.eval_curve(key) for h in histories], bounds=ACCURACY if key.startswith("test_acc") else None)


def training_curves(histories: Mapping[str, Sequence[History]]) -> go.Figure:
    """Training loss and eval-mode test accuracy over seeds: mean and 95 % t-interval per step."""
    fig = subplots(rows=1, cols=2, subplot_titles=("training loss (cross-entropy, per step)",
                                                   "test accuracy (eval mode)"))
    n = max(len(hs) for hs in histories.values())
    for i, (label, hs) in enumerate(histories.items()):
        add_band(fig, loss_band(hs), name=label, c=color(i), row=1, col=1)
        add_band(fig, eval_band(hs), name=label, c=color(i), row=1, col=2, showlegend=False, mode="lines+markers")
    fig.update_xaxes(title_text="step (weight updates)")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    return styled(fig, f"Training with and without normalization: mean and 95 % CI over {n} seeds")


def replace_with_bands(fig: go.Figure, histories: Mapping[str, Sequence[History]], key: str = "test_acc", *,
                       row: int, col: int, suffix: str = "") -> go.Figure:
    """``fig`` with the single-run curves named ``label + suffix`` in panel (row, col) replaced by
    the mean and 95 % band over seeds of ``histories[label]``'s evaluations ``key``."""
    names = {f"{label}{suffix}" for label in histories}
    fig.data = [t for t in fig.data if t.name not in names]
    for i, (label, hs) in enumerate(histories.items()):
        add_band(fig, eval_band(hs, key), name=f"{label}{suffix}", c=color(i), row=row, col=col)
    return fig
