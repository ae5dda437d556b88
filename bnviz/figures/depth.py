"""Figures of the gradients-vs-depth view: gradient norm per layer, at initialization and after training steps."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import plotly.graph_objects as go

from ..experiments.depth_gradients import GROWTH, KINDS, GradientRun
from .common import color, styled, subplots
from .residual import legend_below


def gradient_norms(runs: Mapping[str, GradientRun], step: int, growth: float = GROWTH) -> go.Figure:
    """||dL/dW_l|| per layer at step 0 (dotted) and at ``step`` (solid), log scale, with the line
    ``||dL/dW_L|| * growth ** (L - l)`` through the BN network's last layer at step 0 (dashed)."""
    fig = go.Figure()
    for i, (label, run) in enumerate(runs.items()):
        c = color(i)
        layers = np.arange(1, run.norms.shape[1] + 1) if len(run.norms) else np.array([])
        at_init = run.at(0)
        if at_init is None:
            continue
        now = run.at(step)
        if step > 0 and now is not None:
            fig.add_scatter(x=layers, y=now, name=f"{label}, step {step}", legendgroup=label, mode="lines+markers",
                            line=dict(color=c, width=2), marker=dict(size=5),
                            hovertemplate=f"{label}<br>step {step}<br>layer %{{x}}<br>%{{y:.3g}}<extra></extra>")
        fig.add_scatter(x=layers, y=at_init, name=f"{label}, initialization", legendgroup=label,
                        mode="lines+markers" if step == 0 else "lines",
                        line=dict(color=c, width=2 if step == 0 else 1, dash="solid" if step == 0 else "dot"),
                        hovertemplate=f"{label}<br>initialization<br>layer %{{x}}<br>%{{y:.3g}}<extra></extra>")
        if label == KINDS["bn"]:
            depth = len(at_init)
            theory = at_init[-1] * growth ** (depth - layers)
            fig.add_scatter(x=layers, y=theory, name=f"{growth:.3f}^(L - l) from the last layer",
                            mode="lines", line=dict(color="black", dash="dash", width=1),
                            hovertemplate="Yang et al.: sqrt(pi/(pi-1)) per layer<br>layer %{x}<br>%{y:.3g}<extra></extra>")
    fig.update_xaxes(title_text="layer l (1 = next to the input)")
    fig.update_yaxes(type="log", title_text="||dL/dW_l|| (Frobenius norm, log)")
    title = "Gradient norm per layer at initialization" if step == 0 else \
        f"Gradient norm per layer at initialization (dotted) and at step {step}"
    return legend_below(styled(fig, title, height=520), 2)


def growth_over_steps(runs: Mapping[str, GradientRun]) -> go.Figure:
    """Per training step: how many times larger the first layer's gradient is than the last's
    (left), and the training loss (right)."""
    fig = subplots(rows=1, cols=2, subplot_titles=("||dL/dW_1|| / ||dL/dW_L||", "training loss (cross-entropy)"))
    for i, (label, run) in enumerate(runs.items()):
        c = color(i)
        ratio = [float(r) if np.isfinite(r) and r > 0 else None for r in run.growth()]
        fig.add_scatter(x=np.arange(len(ratio)), y=ratio, name=label, legendgroup=label, line=dict(color=c),
                        hovertemplate=f"{label}<br>step %{{x}}<br>ratio %{{y:.3g}}<extra></extra>", row=1, col=1)
        fig.add_scatter(x=np.arange(len(run.curves.loss)), y=run.curves.loss, name=label, legendgroup=label,
                        showlegend=False, line=dict(color=c, width=1), row=1, col=2)
    fig.update_xaxes(title_text="step (weight updates)")
    fig.update_yaxes(type="log", title_text="ratio (log)", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    return styled(fig, "A few training steps tame the explosion")
