"""Figures of the weight-decay page: norms of scale-invariant weights and the effective learning rate."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..experiments.weight_decay import NormRun
from .common import color, styled, subplots


def norms_and_effective_lr(runs: Sequence[NormRun]) -> go.Figure:
    """Left: ||W|| of every weight layer followed by BN, per step. Right: lr / ||W||^2 (log).
    A colour per layer; solid without weight decay, dashed with."""
    fig = subplots(rows=1, cols=2, subplot_titles=("weight norm ||W|| (Frobenius)",
                                                   "effective learning rate lr / ||W||^2"))
    for j, run in enumerate(runs):
        steps = np.arange(run.norms.shape[0])
        dash = "solid" if run.weight_decay == 0 else "dash"
        for i, layer in enumerate(run.layers):
            name = f"{layer}, {run.label}"
            for col, values in ((1, run.norms[:, i]), (2, run.effective_lr[:, i])):
                fig.add_scatter(x=steps, y=values, name=name, legendgroup=name, showlegend=col == 1, mode="lines",
                                line=dict(color=color(i), width=2, dash=dash), row=1, col=col,
                                hovertemplate=f"{name}<br>after %{{x}} updates<br>%{{y:.4g}}<extra></extra>")
    fig.update_xaxes(title_text="updates done")
    fig.update_yaxes(type="log", row=1, col=2)
    return styled(fig, "Without weight decay the norms only grow and the effective learning rate decays", height=480)


def test_accuracy(runs: Sequence[NormRun]) -> go.Figure:
    fig = go.Figure()
    for j, run in enumerate(runs):
        fig.add_scatter(x=run.eval_steps, y=run.test_acc, name=run.label, mode="lines+markers",
                        line=dict(color=color(j), width=2),
                        hovertemplate=f"{run.label}<br>step %{{x}}<br>test accuracy %{{y:.1%}}<extra>eval mode</extra>")
    fig.update_xaxes(title_text="step (weight updates)")
    fig.update_yaxes(title_text="test accuracy (eval mode)", tickformat=".0%")
    return styled(fig, "Test accuracy with and without weight decay")
