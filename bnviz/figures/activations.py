"""Figures of activations: training curves, per-layer histograms, percentile bands, heatmaps."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..models import TAP_LABELS
from ..record import PERCENTILES, History
from .common import color, rgba, styled


def training_curves(histories: Mapping[str, History]) -> go.Figure:
    """Training loss (per step) and eval-mode test accuracy (at each evaluation), side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss (cross-entropy, per step)",
                                                        "test accuracy (eval mode)"))
    for i, (label, h) in enumerate(histories.items()):
        steps, loss, _ = h.loss_curve()
        fig.add_scatter(x=steps, y=loss, name=label, line=dict(color=color(i), width=1.5), row=1, col=1,
                        legendgroup=label)
        es, acc = h.eval_curve("test_acc")
        fig.add_scatter(x=es, y=acc, name=label, line=dict(color=color(i), width=2), mode="lines+markers",
                        row=1, col=2, legendgroup=label, showlegend=False)
    fig.update_xaxes(title_text="step (weight updates)")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    return styled(fig, "Training with and without normalization")


def _bin_centers(edges: np.ndarray) -> np.ndarray:
    return (edges[:-1] + edges[1:]) / 2


def layer_histograms(histories: Mapping[str, History], step: int, tap: str, *, log_y: bool = False) -> go.Figure:
    """One panel per layer: the distribution at ``tap`` in the forward pass of ``step``, overlaid
    for every run. Bars are fractions of all values, so runs with different sizes compare."""
    first = next(iter(histories.values()))
    names = first.layer_names
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True)
    for i, (label, h) in enumerate(histories.items()):
        snap = h.snapshot_at(step)
        edges = h.edges[tap]
        for layer in range(len(names)):
            st = snap.taps.get((layer, tap))
            if st is None:
                continue
            frac = st.counts / max(st.n, 1)
            outside = (st.below + st.above) / max(st.n, 1)
            fig.add_bar(x=_bin_centers(edges), y=frac, width=float(edges[1] - edges[0]), name=label,
                        marker_color=color(i), opacity=0.55, legendgroup=label, showlegend=layer == 0,
                        hovertemplate=f"{label}<br>value %{{x:.2f}}<br>%{{y:.2%}} of values"
                                      f"<extra>mean {st.mean:.3f}, std {st.std:.3f}, zeros {st.zero_frac:.1%}, "
                                      f"outside range {outside:.1%}</extra>",
                        row=1, col=layer + 1)
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(title_text="value")
    fig.update_yaxes(title_text="fraction of values", row=1, col=1)
    if log_y:
        fig.update_yaxes(type="log")
    return styled(fig, f"{TAP_LABELS[tap].capitalize()} per layer at step {step}")


def percentile_bands(histories: Mapping[str, History], layer: int, tap: str, *, unit: bool = False,
                     bands: Sequence[int] = (15, 50, 85)) -> go.Figure:
    """Percentiles of a layer's tap over training: the median as a line, the outer pair as a band.

    With ``unit`` the percentiles are those of unit 0 across the batch (Ioffe & Szegedy, Fig. 1);
    otherwise of all units together.
    """
    lo_q, mid_q, hi_q = bands
    idx = {q: PERCENTILES.index(q) for q in bands}
    fig = go.Figure()
    for i, (label, h) in enumerate(histories.items()):
        steps, stats = h.tap_series(layer, tap)
        if not stats:
            continue
        pct = np.array([s.unit_percentiles if unit else s.percentiles for s in stats])
        c = color(i)
        fig.add_scatter(x=steps, y=pct[:, idx[hi_q]], line=dict(width=0.5, color=c), name=f"{label} {hi_q}th",
                        legendgroup=label, showlegend=False)
        fig.add_scatter(x=steps, y=pct[:, idx[lo_q]], line=dict(width=0.5, color=c), fill="tonexty",
                        fillcolor=rgba(c, 0.2), name=f"{label} {lo_q}th-{hi_q}th", legendgroup=label)
        fig.add_scatter(x=steps, y=pct[:, idx[mid_q]], line=dict(width=2, color=c), name=f"{label} {mid_q}th",
                        legendgroup=label)
    who = "unit 1 of" if unit else "all units of"
    fig.update_xaxes(title_text="step (weight updates)")
    fig.update_yaxes(title_text="value")
    name = first_layer_name(histories, layer)
    return styled(fig, f"{lo_q}/{mid_q}/{hi_q}th percentiles of {TAP_LABELS[tap]}, {who} {name}")


def first_layer_name(histories: Mapping[str, History], layer: int) -> str:
    names = next(iter(histories.values())).layer_names
    return names[layer] if layer < len(names) else f"layer {layer + 1}"


def histogram_heatmap(history: History, layer: int, tap: str, label: str = "", *, log_color: bool = True) -> go.Figure:
    """The distribution over time: one column per recorded step, colour = fraction of values per bin."""
    steps, stats = history.tap_series(layer, tap)
    edges = history.edges[tap]
    z = np.array([s.counts / max(s.n, 1) for s in stats]).T if stats else np.zeros((len(edges) - 1, 0))
    shown = np.log10(z + 1e-4) if log_color else z
    fig = go.Figure(go.Heatmap(
        x=steps, y=_bin_centers(edges), z=shown, colorscale="Viridis", customdata=z,
        colorbar=dict(title="log10 fraction" if log_color else "fraction"),
        hovertemplate="step %{x}<br>value %{y:.2f}<br>%{customdata:.2%} of values<extra></extra>"))
    fig.update_xaxes(title_text="step (weight updates)")
    fig.update_yaxes(title_text="value")
    suffix = f" ({label})" if label else ""
    return styled(fig, f"Distribution of {TAP_LABELS[tap]} over training, {history.layer_names[layer]}{suffix}")


def moment_lines(histories: Mapping[str, History], tap: str, step: int) -> go.Figure:
    """Mean, standard deviation and fraction of exact zeros of ``tap`` across depth at ``step``."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("mean", "standard deviation", "fraction of exact zeros"))
    for i, (label, h) in enumerate(histories.items()):
        snap = h.snapshot_at(step)
        layers = [layer for layer in range(len(h.layer_names)) if (layer, tap) in snap.taps]
        stats = [snap.taps[(layer, tap)] for layer in layers]
        x = [h.layer_names[layer] for layer in layers]
        for col, values in enumerate(([s.mean for s in stats], [s.std for s in stats], [s.zero_frac for s in stats])):
            fig.add_scatter(x=x, y=values, name=label, mode="lines+markers", line=dict(color=color(i)),
                            legendgroup=label, showlegend=col == 0, row=1, col=col + 1)
    fig.update_yaxes(tickformat=".0%", row=1, col=3)
    return styled(fig, f"{TAP_LABELS[tap].capitalize()}: moments across depth at step {step}")
