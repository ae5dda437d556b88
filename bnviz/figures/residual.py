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


def _positive(values: np.ndarray) -> list[float | None]:
    """Values for a log axis: an exact 0 (a branch that starts at 0) has no place on it."""
    return [float(v) if v > 0 and np.isfinite(v) else None for v in values]


def variance_at_init(measured: Mapping[str, BlockVariances]) -> go.Figure:
    """Left: each block's skip-path variance (its input) at initialization, with the closed forms
    (dotted) where there is one. Right: the branch's variance over the skip path's, per block."""
    fig = subplots(rows=1, cols=2, subplot_titles=("skip path: Var(x_l), the input of block l",
                                                   "branch / skip: Var(f_l(x_l)) / Var(x_l)"))
    zero_branch = []
    for i, (label, v) in enumerate(measured.items()):
        c = color(i)
        fig.add_scatter(x=v.blocks, y=v.skip, name=label, legendgroup=label, mode="lines+markers",
                        line=dict(color=c), hovertemplate=f"{label}<br>block %{{x}}<br>Var(x) %{{y:.3g}}<extra></extra>",
                        row=1, col=1)
        ratio = v.ratio
        if np.all(ratio == 0):
            zero_branch.append(label)
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
    if zero_branch:
        fig.add_annotation(x=0.99, y=0.02, xref="x2 domain", yref="y2 domain", xanchor="right", yanchor="bottom",
                           showarrow=False, bgcolor="rgba(255,255,255,0.8)", align="right",
                           text="branch exactly 0 at initialization (no point on a log axis):<br>"
                                + "<br>".join(zero_branch))
    return styled(fig, "At initialization: the skip path grows with depth, the branch does not", height=480)


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
    fig.update_layout(legend=dict(font=dict(size=10)))
    return styled(fig, f"During training: how much each block's branch adds, at step {step} (dotted: step 0)")


def training_curves(runs: Mapping[str, ResidualRun], window: int = 10) -> go.Figure:
    """Training loss (moving average of ``window`` steps) and test accuracy of every variant: the
    Why-BN-helps view's training figure, retitled."""
    fig = noisy_training({label: run.curves for label, run in runs.items()}, window)
    return fig.update_layout(title_text="Training side by side: same seed, data and batches")
