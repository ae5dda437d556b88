"""Figures of the transformers view: gradients at initialization, warm-up, LayerNorm's S-shape, LN vs RMSNorm."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import plotly.graph_objects as go

from ..experiments.transformer import OneVector, Scatter, TransformerRun
from ..tiny_transformer import VARIANTS
from .common import color, styled, subplots
from .residual import legend_below


def _variant_color(variant: str) -> str:
    return color(list(VARIANTS).index(variant))


def gradients_at_init(norms: Mapping[str, np.ndarray]) -> go.Figure:
    """||dL/dW2_l|| per layer at initialization, one line per variant (log axis)."""
    fig = go.Figure()
    for variant, values in norms.items():
        layers = np.arange(1, len(values) + 1)
        fig.add_scatter(x=layers, y=values, name=variant, mode="lines+markers", line=dict(color=_variant_color(variant)),
                        hovertemplate=f"{variant}<br>layer %{{x}}<br>%{{y:.3g}}<extra></extra>")
    fig.update_xaxes(title_text="layer l (1 = next to the input)", dtick=1)
    fig.update_yaxes(type="log", title_text="||dL/dW2_l|| (Frobenius norm, log)")
    return styled(fig, "Gradient norm of each layer's second feed-forward weight at initialization")


def warmup(runs: Mapping[str, TransformerRun], window: int = 10) -> go.Figure:
    """Test accuracy (top) and training loss (bottom, moving average of ``window`` steps), without
    (left) and with (right) warm-up, one colour per variant."""
    warm = next((r.warmup for r in runs.values() if r.warmup), 0)
    fig = subplots(rows=2, cols=2, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=(
        "test accuracy per token, no warm-up", f"test accuracy per token, {warm} warm-up steps",
        f"training loss (moving average of {window} steps), no warm-up", "training loss, with warm-up"))
    shown = set()
    for run in runs.values():
        c, col = _variant_color(run.variant), 2 if run.warmup else 1
        cur = run.curves
        fig.add_scatter(x=cur.eval_steps, y=cur.test_acc, name=run.variant, legendgroup=run.variant,
                        showlegend=run.variant not in shown, mode="lines+markers", line=dict(color=c), marker=dict(size=4),
                        hovertemplate=f"{run.variant}<br>step %{{x}}<br>accuracy %{{y:.1%}}<extra></extra>", row=1, col=col)
        shown.add(run.variant)
        loss = cur.loss
        if len(loss) >= window > 1:
            loss = np.convolve(loss, np.ones(window) / window, mode="valid")
        fig.add_scatter(x=np.arange(len(cur.loss) - len(loss), len(cur.loss)), y=loss, name=run.variant,
                        legendgroup=run.variant, showlegend=False, line=dict(color=c, width=1.5), row=2, col=col)
        if warm:
            fig.add_vline(x=warm, line=dict(color="grey", dash="dot", width=1), row=1, col=2)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1)
    fig.update_yaxes(type="log", row=2)
    fig.update_xaxes(title_text="step (weight updates)", row=2)
    return styled(fig, "Training with and without learning-rate warm-up: same seed, batches and peak learning rate",
                  height=640)


def normalization_scatter(scatter: Scatter, fit: tuple[float, float]) -> go.Figure:
    """A norm layer's input against its normalized output, per value, coloured by feature, with the
    DyT curve ``gamma * tanh(alpha * x)`` closest to the points."""
    fig = go.Figure()
    for i, ch in enumerate(np.unique(scatter.channel)):
        pick = scatter.channel == ch
        fig.add_scattergl(x=scatter.x[pick], y=scatter.x_hat[pick], mode="markers", name=f"feature {ch}",
                          marker=dict(size=3, color=color(i), opacity=0.5),
                          hovertemplate=f"feature {ch}<br>input %{{x:.3g}}<br>normalized %{{y:.3g}}<extra></extra>")
    alpha, gamma = fit
    grid = np.linspace(scatter.x.min(), scatter.x.max(), 200) if len(scatter.x) else np.array([])
    fig.add_scatter(x=grid, y=gamma * np.tanh(alpha * grid), mode="lines", line=dict(color="black", width=2),
                    name=f"DyT fit: {gamma:.3g} · tanh({alpha:.3g} x)")
    fig.update_xaxes(title_text="input x of the norm layer")
    fig.update_yaxes(title_text="normalized output x_hat = (y - beta) / gamma")
    return legend_below(styled(fig, f"{scatter.name}: input against normalized output, every token of a batch",
                               height=540), 2)


def one_vector(result: OneVector, shift: float, scale: float) -> go.Figure:
    """The vector and its moved copy (left), their LayerNorm (middle) and RMSNorm (right)."""
    fig = subplots(rows=1, cols=3, subplot_titles=(
        "input", f"LayerNorm (largest change {result.ln_change:.2g})",
        f"RMSNorm (largest change {result.rms_change:.2g})"))
    features = np.arange(1, len(result.v) + 1)
    moved = f"{scale:g} · v + {shift:g}"
    for col, (a, b) in enumerate(((result.v, result.moved), (result.ln, result.ln_moved),
                                  (result.rms, result.rms_moved)), start=1):
        fig.add_bar(x=features, y=a, name="v", legendgroup="v", showlegend=col == 1, marker_color=color(0),
                    row=1, col=col)
        fig.add_bar(x=features, y=b, name=moved, legendgroup="moved", showlegend=col == 1, marker_color=color(1),
                    row=1, col=col)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="feature", dtick=1)
    return styled(fig, f"One vector v and {moved}: LayerNorm removes shift and scale, RMSNorm only the scale")
