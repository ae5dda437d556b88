"""Figures of the residual-networks view: branch against skip-path variance per block, and training."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import plotly.graph_objects as go

from ..experiments.residual import BlockVariances, ResidualRun, expected_skip
from .common import color, styled, subplots
from .why import noisy_training

# The variants whose skip-path variance has a closed form at initialization (see experiments.residual).
LAWS = {"pre-activation BN": ("pre", "Var(x_0) + (l - 1)"), "no normalization": ("none", "Var(x_0) · 2^(l - 1)")}


def legend_below(fig: go.Figure, rows: int = 2) -> go.Figure:
    """The legend under the plot, left-aligned, with the bottom margin it needs (``rows`` lines of
    entries): a long legend above the plot would cover the title."""
    return fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.16, xanchor="left", x=0,
                                         font=dict(size=11)),
                             margin=dict(b=90 + 22 * rows))


def _positive(values: np.ndarray) -> list[float | None]:
    """Values for a log axis: an exact 0 (a branch that starts at 0) has no place on it."""
    return [float(v) if v > 0 and np.isfinite(v) else None for v in values]


def variance_at_init(measured: Mapping[str, BlockVariances]) -> go.Figure:
    """Left: each block's skip-path variance (its input) at initialization, with the closed forms
    (dotted) where there is one. Right: the branch's variance over the skip path's, per block."""
    zero_branch = [label for label, v in measured.items() if np.all(v.branch == 0)]
    right = "branch / skip: Var(f_l(x_l)) / Var(x_l)"
    if zero_branch:
        right += "<br><sup>exactly 0 (off the log axis): " + ", ".join(zero_branch) + "</sup>"
    fig = subplots(rows=1, cols=2, subplot_titles=("skip path: Var(x_l), the input of block l", right))
    for i, (label, v) in enumerate(measured.items()):
        c = color(i)
        fig.add_scatter(x=v.blocks, y=v.skip, name=label, legendgroup=label, mode="lines+markers",
                        line=dict(color=c), hovertemplate=f"{label}<br>block %{{x}}<br>Var(x) %{{y:.3g}}<extra></extra>",
                        row=1, col=1)
        ratio = v.ratio
        fig.add_scatter(x=v.blocks, y=_positive(ratio), name=label, legendgroup=label, showlegend=False,
                        mode="lines+markers", line=dict(color=c),
                        hovertemplate=f"{label}<br>block %{{x}}<br>ratio %{{y:.3g}}<extra></extra>", row=1, col=2)
        base = label.split(",")[0]
        if base in LAWS and not np.all(ratio == 0):
            kind, text = LAWS[base]
            fig.add_scatter(x=v.blocks, y=expected_skip(kind, float(v.skip[0]), len(v.skip)), mode="lines",
                            name=f"{base}: {text}", line=dict(color=c, dash="dot", width=2), legendgroup=label,
                            hovertemplate=f"closed form {text}<br>block %{{x}}<br>%{{y:.3g}}<extra></extra>",
                            row=1, col=1)
    fig.update_xaxes(title_text="block l", dtick=1 if len(next(iter(measured.values())).skip) <= 16 else None)
    fig.update_yaxes(type="log", title_text="variance of all values (log)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="ratio (log)", row=1, col=2)
    styled(fig, "At initialization: the skip path grows with depth, the branch does not", height=540)
    return legend_below(fig, 3)


def ratio_during_training(runs: Mapping[str, ResidualRun], step: int) -> go.Figure:
    """Branch / skip variance per block at the recording nearest before ``step``, each variant
    (solid) against its own initialization (dotted)."""
    fig = go.Figure()
    for i, (label, run) in enumerate(runs.items()):
        c = color(i)
        now, start = run.at(step), run.at(0)
        if now is None:
            continue
        fig.add_scatter(x=now.blocks, y=_positive(now.ratio), name=f"{label} (step {now.step})", legendgroup=label,
                        mode="lines+markers", line=dict(color=c, width=2),
                        hovertemplate=f"{label}<br>step {now.step}<br>block %{{x}}<br>ratio %{{y:.3g}}<extra></extra>")
        if start is not None and now.step != 0:
            fig.add_scatter(x=start.blocks, y=_positive(start.ratio), name=f"{label}: step 0", legendgroup=label,
                            showlegend=False, mode="lines", line=dict(color=c, dash="dot", width=1),
                            hovertemplate=f"{label}<br>step 0<br>block %{{x}}<br>ratio %{{y:.3g}}<extra></extra>")
    fig.update_xaxes(title_text="block l", dtick=1)
    fig.update_yaxes(type="log", title_text="Var(branch) / Var(skip) (log)")
    styled(fig, f"During training: how much each block's branch adds, at step {step} (dotted: step 0)", height=520)
    return legend_below(fig, 2)


def training_curves(runs: Mapping[str, ResidualRun], window: int = 10) -> go.Figure:
    """Training loss (moving average of ``window`` steps) and test accuracy of every variant: the
    Why-BN-helps view's training figure, retitled."""
    fig = noisy_training({label: run.curves for label, run in runs.items()}, window)
    return fig.update_layout(title_text="Training side by side: same seed, data and batches")
