"""Figures of the gradient-accumulation page: accuracy of true vs accumulated batches, and the noise
of BN's batch statistics."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..experiments.grad_accumulation import NORM_LABELS, NORMS, AccumulationRun
from .common import color, styled


def test_accuracy(runs: Sequence[AccumulationRun]) -> go.Figure:
    """Eval-mode test accuracy during training: solid the true batch, dashed the accumulated one,
    a colour per normalization."""
    fig = go.Figure()
    for run in runs:
        c = color(NORMS.index(run.norm))
        fig.add_scatter(x=run.eval_steps, y=run.test_acc, name=run.label, mode="lines+markers",
                        line=dict(color=c, width=2, dash="solid" if run.micro_batches == 1 else "dash"),
                        hovertemplate=f"{run.label}<br>step %{{x}}<br>test accuracy %{{y:.1%}}<extra>eval mode</extra>")
    fig.update_xaxes(title_text="step (weight updates)")
    fig.update_yaxes(title_text="test accuracy (eval mode)", tickformat=".0%")
    styled(fig, "Accumulated gradients: the same for GroupNorm and LayerNorm, not for BatchNorm")
    # six entries do not fit one row above the plot: a column on the right
    return fig.update_layout(legend=dict(orientation="v", yanchor="top", y=1, xanchor="left", x=1.02),
                             margin=dict(r=260))


def statistics_noise(runs: Sequence[AccumulationRun]) -> go.Figure:
    """Per channel of the first BN layer: the measured step-to-step standard deviation of its batch
    mean against sigma / sqrt(n), for the true batch and the accumulated micro-batches."""
    fig = go.Figure()
    top = 0.0
    for i, run in enumerate(r for r in runs if r.noise is not None):
        noise = run.noise
        top = max(top, float(np.max(noise.measured)), float(np.max(noise.theory)))
        fig.add_scatter(x=noise.theory, y=noise.measured, mode="markers", name=f"{run.label} (n = {noise.n})",
                        marker=dict(color=[color(0), color(1)][i % 2], size=7, opacity=0.8),
                        hovertemplate="sigma/sqrt(n) %{x:.4f}<br>measured %{y:.4f}"
                                      f"<extra>{run.label}, one channel</extra>")
    fig.add_scatter(x=[0, top * 1.05], y=[0, top * 1.05], mode="lines", name="measured = sigma / sqrt(n)",
                    line=dict(color="#7f7f7f", dash="dot"), hoverinfo="skip")
    fig.update_xaxes(title_text="sigma / sqrt(n): standard error of a mean of n samples")
    fig.update_yaxes(title_text="measured std of the batch mean between steps")
    return styled(fig, "BN's statistics come from each micro-batch: sqrt(k) times noisier")


def final_accuracy(runs: Sequence[AccumulationRun]) -> go.Figure:
    """Final eval-mode test accuracy per normalization, true batch vs accumulated."""
    fig = go.Figure()
    for j, micro in enumerate(("true", "accumulated")):
        chosen = [r for r in runs if (r.micro_batches == 1) == (micro == "true")]
        if not chosen:
            continue
        name = f"true batch {chosen[0].batch_size}" if micro == "true" else \
            f"{chosen[0].micro_batches} micro-batches of {chosen[0].batch_size // chosen[0].micro_batches}"
        fig.add_bar(x=[NORM_LABELS[r.norm] for r in chosen], y=[r.final_acc for r in chosen], name=name,
                    marker_color=["#7f7f7f", color(1)][j], text=[f"{r.final_acc:.1%}" for r in chosen],
                    hovertemplate="%{x}<br>test accuracy %{y:.2%}" + f"<extra>{name}</extra>")
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="test accuracy after training (eval mode)", tickformat=".0%")
    return styled(fig, "After training: the eval gap accumulation opens for BN only")
