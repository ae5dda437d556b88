"""Figures of what a ReLU does after (or before) BatchNorm, with the rectified-Gaussian theory.

A BN layer placed before a ReLU hands unit ``j`` the values ``gamma_j * x_hat + beta_j``, with
``x_hat`` standardized over the batch. If ``x_hat`` were exactly N(0, 1), the unit's ReLU output
would be the rectified Gaussian ReLU(N(beta_j, gamma_j^2)) of :mod:`bnviz.theory`: a point mass
``Phi(-beta_j / |gamma_j|)`` at exactly 0 and a normal density above it. A layer's values pooled
over its units then follow the average of those per-unit laws; that is the prediction drawn here
against the recorded histograms. At initialization (gamma = 1, beta = 0) it is ReLU(N(0, 1)): mean
0.399, standard deviation 0.584, half the values exactly 0. The prediction is approximate by
construction (a batch-standardized unit is not exactly Gaussian), which is the point of showing
both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import plotly.graph_objects as go

from .. import theory
from ..config import Config
from ..record import History, NormStats, TapStats
from .activations import bin_centers, moment_lines, snapshot_for
from .common import color, rgba, styled, subplots

# gamma may be (near) 0; the rectified Gaussian needs sigma > 0.
_MIN_SCALE = 1e-6
_erfc = np.frompyfunc(math.erfc, 1, 1)


def is_bn_relu(config: Config) -> bool:
    """Whether a network puts BatchNorm right before a ReLU (the case the theory describes)."""
    return config.norm in ("batchnorm", "reference") and config.placement == "before" and config.activation == "relu"


def keep_after_relu(config: Config) -> float:
    """Keep probability of a dropout between the ReLU and the next layer; 1 when there is none."""
    if config.dropout > 0 and config.dropout_position == "after_activation":
        return 1.0 - config.dropout
    return 1.0


def _scales(norm: NormStats) -> tuple[np.ndarray, np.ndarray]:
    """(|gamma|, beta) per unit, in float64. ReLU(gamma z + beta) has the law of ReLU(|gamma| z + beta)
    for a symmetric z, so the sign of gamma does not matter."""
    return np.maximum(np.abs(norm.weight.astype(np.float64)), _MIN_SCALE), norm.bias.astype(np.float64)


def has_finite_affine(norm: NormStats | None) -> bool:
    """Whether a norm layer has a gamma and beta to predict from (a diverged run's may be NaN)."""
    return (norm is not None and norm.weight is not None and norm.bias is not None
            and bool(np.isfinite(norm.weight).all() and np.isfinite(norm.bias).all()))


def zero_probabilities(norm: NormStats) -> np.ndarray:
    """Per unit, ``P(ReLU(gamma z + beta) == 0) = Phi(-beta / |gamma|)`` for z ~ N(0, 1).

    The same number as :func:`bnviz.theory.relu_gaussian_moments`' ``p_zero``, vectorized (it is
    evaluated for every unit at every recorded step).
    """
    scale, beta = _scales(norm)
    return 0.5 * _erfc(beta / (scale * math.sqrt(2.0))).astype(np.float64)


@dataclass(frozen=True)
class Prediction:
    """Rectified-Gaussian prediction for one layer's values pooled over its units."""

    mean: float
    std: float
    p_zero: float       # fraction of values exactly 0


def predict_layer(norm: NormStats, keep: float = 1.0) -> Prediction:
    """Pool ReLU(N(beta_j, gamma_j^2)) over the units ``j`` of a BN layer, then apply inverted
    dropout with keep probability ``keep`` (1 = no dropout).

    Pooled: mean = avg_j m_j, E[Y^2] = avg_j (v_j + m_j^2), P(0) = avg_j p_j. Dropout keeps the
    mean, multiplies E[Y^2] by 1 / keep (:func:`bnviz.theory.dropout_train_variance`) and zeroes a
    further ``1 - keep`` of the non-zero values.
    """
    scale, beta = _scales(norm)
    moments = [theory.relu_gaussian_moments(b, s) for b, s in zip(beta, scale)]
    mean = float(np.mean([m.mean for m in moments]))
    second = float(np.mean([m.var + m.mean ** 2 for m in moments]))
    var = theory.dropout_train_variance(mean, max(second - mean ** 2, 0.0), keep)
    p_zero = float(np.mean([m.p_zero for m in moments]))
    return Prediction(mean=mean, std=math.sqrt(var), p_zero=1.0 - keep * (1.0 - p_zero))


def predicted_density(norm: NormStats, x: np.ndarray) -> np.ndarray:
    """Density of the continuous part of the pooled law at ``x``: avg_j of
    :func:`bnviz.theory.relu_gaussian_pdf` (it integrates to ``1 - P(0)``)."""
    scale, beta = _scales(norm)
    return np.mean([theory.relu_gaussian_pdf(x, b, s) for b, s in zip(beta, scale)], axis=0)


def nonzero_density(stats: TapStats, edges: np.ndarray) -> np.ndarray:
    """Histogram as a density (fraction of all values per unit of x) with the exact zeros taken
    out of the bin that holds 0, so it compares with a density and the zeros can be shown apart."""
    counts = stats.counts.astype(np.float64)
    if edges[0] <= 0.0 < edges[-1]:
        counts[np.searchsorted(edges, 0.0, side="right") - 1] -= round(stats.zero_frac * stats.n)
    return counts / max(stats.n, 1) / np.diff(edges.astype(np.float64))


def _bn_relu_label(histories: Mapping[str, History]) -> str | None:
    return next((label for label, h in histories.items() if is_bn_relu(h.config)), None)


def next_layer_input(histories: Mapping[str, History], layer: int, step: int, *, log_y: bool = False) -> go.Figure:
    """The values the next layer receives (each block's output) for several orderings, overlaid.

    Left: the density of the non-zero values, so runs binned on different ranges compare. Right:
    the fraction of values that are exactly 0 (the ReLU's point mass, which a density cannot
    show), with the rectified-Gaussian prediction for the BN-then-ReLU run.
    """
    fig = subplots(rows=1, cols=2, column_widths=[0.78, 0.22], horizontal_spacing=0.08,
                   subplot_titles=("density of the non-zero values", "exactly 0"))
    theory_label = _bn_relu_label(histories)
    occupied: list[float] = []
    for i, (label, h) in enumerate(histories.items()):
        snap, name = snapshot_for(label, h, step)
        st = snap.taps.get((layer, "output"))
        if st is None:
            continue
        edges = h.edges["output"]
        beyond = (st.below + st.above) / max(st.n, 1)
        filled = np.flatnonzero(st.counts)
        if filled.size:
            occupied += [float(edges[filled[0]]), float(edges[filled[-1] + 1])]
        fig.add_scatter(x=edges, y=np.append(nonzero_density(st, edges), np.nan), mode="lines",
                        line=dict(color=color(i), width=2, shape="hv"), name=name, legendgroup=label,
                        hovertemplate=f"{label}<br>from %{{x:.2f}}: density %{{y:.3f}}<extra>mean {st.mean:.3f}, "
                                      f"std {st.std:.3f}, outside [{edges[0]:g}, {edges[-1]:g}]: {beyond:.1%}</extra>",
                        row=1, col=1)
        fig.add_bar(x=[label], y=[st.zero_frac], marker_color=color(i), name=label, legendgroup=label,
                    showlegend=False, hovertemplate=f"{label}: %{{y:.1%}} exactly 0<extra></extra>", row=1, col=2)
        if label == theory_label and has_finite_affine(snap.norms.get(layer)):
            pred = predict_layer(snap.norms[layer], keep_after_relu(h.config))
            fig.add_scatter(x=[label], y=[pred.p_zero], mode="markers", name="rectified Gaussian (from gamma, beta)",
                            marker=dict(symbol="line-ew-open", size=28, color="black", line=dict(width=3)),
                            hovertemplate="rectified-Gaussian prediction: %{y:.1%}<extra></extra>", row=1, col=2)
    # The bins span up to [-8, 8]; show the part any run fills.
    fig.update_xaxes(title_text="value", range=[min(occupied), max(occupied)] if occupied else None, row=1, col=1)
    fig.update_yaxes(title_text="fraction of values per unit of x", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=1, col=2)
    if log_y:
        fig.update_yaxes(type="log", row=1, col=1)
    name = next(iter(histories.values())).layer_names[layer]
    return styled(fig, f"Input of the next layer ({name} output) at step {step}")


def rectified_gaussian_check(history: History, step: int) -> go.Figure:
    """BN-then-ReLU post-activations per layer against the rectified Gaussian of that layer's gamma
    and beta: bars are the recorded density of the non-zero values, the line the prediction; the
    arrow at 0 gives the measured and predicted fraction of exact zeros."""
    names = history.layer_names
    snap = history.snapshot_at(step)
    edges = history.edges["post_activation"]
    grid = np.linspace(float(edges[0]), float(edges[-1]), 201)
    fig = subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True)
    for layer in range(len(names)):
        st = snap.taps.get((layer, "post_activation"))
        norm = snap.norms.get(layer)
        if st is None or not has_finite_affine(norm):
            continue
        first = layer == 0
        fig.add_bar(x=bin_centers(edges), y=nonzero_density(st, edges), width=float(edges[1] - edges[0]),
                    marker=dict(color=color(0), line_width=0), opacity=0.6, name="recorded (non-zero values)", legendgroup="measured",
                    showlegend=first, hovertemplate="value %{x:.2f}<br>density %{y:.3f}<extra>recorded</extra>",
                    row=1, col=layer + 1)
        pred = predict_layer(norm)
        fig.add_scatter(x=grid, y=predicted_density(norm, grid), mode="lines", line=dict(color="black", width=2),
                        name="rectified Gaussian from gamma, beta", legendgroup="theory", showlegend=first,
                        hovertemplate=f"value %{{x:.2f}}<br>density %{{y:.3f}}<extra>prediction: mean {pred.mean:.3f}, "
                                      f"std {pred.std:.3f}</extra>", row=1, col=layer + 1)
        fig.add_annotation(row=1, col=layer + 1, x=0, y=0, ax=110, ay=-170, showarrow=True, arrowhead=2,
                           align="left", font=dict(size=11), bgcolor=rgba("#ffffff", 0.8),
                           text=f"exactly 0:<br>{st.zero_frac:.1%} recorded<br>{pred.p_zero:.1%} predicted")
    fig.update_layout(bargap=0)
    fig.update_xaxes(title_text="value")
    fig.update_yaxes(title_text="fraction of values per unit of x", row=1, col=1)
    return styled(fig, f"BN→ReLU output vs the rectified Gaussian at step {snap.step}")


def relu_moments(histories: Mapping[str, History], step: int) -> go.Figure:
    """:func:`~bnviz.figures.activations.moment_lines` of the next layer's input, with the
    rectified-Gaussian prediction for the BN-then-ReLU run (dropout after the ReLU included)."""
    fig = moment_lines(histories, "output", step)
    label = _bn_relu_label(histories)
    if label is None:
        return fig
    h = histories[label]
    snap = h.snapshot_at(step)
    layers = [layer for layer in range(len(h.layer_names)) if has_finite_affine(snap.norms.get(layer))]
    preds = [predict_layer(snap.norms[layer], keep_after_relu(h.config)) for layer in layers]
    x = [h.layer_names[layer] for layer in layers]
    for col, values in enumerate(([p.mean for p in preds], [p.std for p in preds], [p.p_zero for p in preds])):
        fig.add_scatter(x=x, y=values, mode="lines+markers", name=f"{label}, rectified-Gaussian prediction",
                        line=dict(color="black", dash="dash", width=1.5), marker=dict(symbol="x"),
                        legendgroup="theory", showlegend=col == 0, row=1, col=col + 1)
    return fig


def _spread(fig: go.Figure, steps: np.ndarray, values: np.ndarray, name: str, c: str, row: int, col: int,
            first: bool) -> None:
    """Mean over units as a line, +- one standard deviation across units as a band."""
    mean, sd = values.mean(axis=1), values.std(axis=1)
    fig.add_scatter(x=steps, y=mean + sd, line=dict(width=0), showlegend=False, legendgroup=name,
                    hoverinfo="skip", row=row, col=col)
    fig.add_scatter(x=steps, y=mean - sd, line=dict(width=0), fill="tonexty", fillcolor=rgba(c, 0.2),
                    showlegend=False, legendgroup=name, hoverinfo="skip", row=row, col=col)
    fig.add_scatter(x=steps, y=mean, line=dict(color=c, width=2), name=name, legendgroup=name, showlegend=first,
                    customdata=sd, hovertemplate=f"{name}<br>step %{{x}}<br>mean %{{y:.3f}}, std across units "
                                                 f"%{{customdata:.3f}}<extra></extra>", row=row, col=col)


def gamma_beta_over_training(history: History) -> go.Figure:
    """How the learned scale and shift of each BN layer move during training, and what they do to
    the ReLU after it: measured fraction of exact zeros against avg_j Phi(-beta_j / |gamma_j|), and
    the share of units whose shift beta_j is negative (their ReLU is off more than half the time)."""
    fig = subplots(rows=2, cols=2, vertical_spacing=0.16, subplot_titles=(
        "gamma (scale): mean, +-1 std across units", "beta (shift): mean, +-1 std across units",
        "exactly 0 after the ReLU: recorded, predicted (dashed)", "units with beta < 0"))
    steps = np.asarray([s for s, snap in zip(history.snapshots.steps, history.snapshots.items) if snap.norms])
    snaps = [snap for snap in history.snapshots if snap.norms]
    for layer, name in enumerate(history.layer_names):
        if not snaps or layer not in snaps[0].norms or snaps[0].norms[layer].weight is None:
            continue  # no learned affine (a norm without gamma and beta): see the note below
        c, first = color(layer), True
        norms = [snap.norms[layer] for snap in snaps]
        _spread(fig, steps, np.array([n.weight for n in norms]), name, c, 1, 1, first)
        _spread(fig, steps, np.array([n.bias for n in norms]), name, c, 1, 2, False)
        measured = [snap.taps[(layer, "post_activation")].zero_frac for snap in snaps]
        fig.add_scatter(x=steps, y=measured, line=dict(color=c, width=2), name=name, legendgroup=name,
                        showlegend=False, hovertemplate=f"{name}, recorded<br>step %{{x}}: %{{y:.1%}}<extra></extra>",
                        row=2, col=1)
        fig.add_scatter(x=steps, y=[zero_probabilities(n).mean() for n in norms], line=dict(color=c, dash="dash"),
                        name=name, legendgroup=name, showlegend=False,
                        hovertemplate=f"{name}, avg Phi(-beta/gamma)<br>step %{{x}}: %{{y:.1%}}<extra></extra>",
                        row=2, col=1)
        fig.add_scatter(x=steps, y=[float(np.mean(n.bias < 0)) for n in norms], line=dict(color=c, width=2),
                        name=name, legendgroup=name, showlegend=False,
                        hovertemplate=f"{name}<br>step %{{x}}: %{{y:.0%}} of units<extra></extra>", row=2, col=2)
    fig.update_xaxes(title_text="step (weight updates)", row=2)
    fig.update_yaxes(tickformat=".0%", row=2)
    if not fig.data:
        fig.add_annotation(text="No gamma and beta to show: these BN layers were built with affine=False, so they "
                                "only standardize (every unit mean 0, variance 1 over the batch).",
                           xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False, font=dict(size=14))
    return styled(fig, "Learned gamma and beta of BN→ReLU over training", height=640)


def shifted_relu_theory(history: History | None = None, step: int | None = None) -> go.Figure:
    """Pure theory: mean, standard deviation and zero fraction of ReLU(N(mu, 1)) against mu, i.e.
    what a shift beta does to a unit with gamma = 1 (for other gamma, mu = beta / |gamma| and the
    mean and std scale by |gamma|).

    With a BN-then-ReLU ``history``, each layer's recorded zero fraction at ``step`` is drawn at
    mu = the layer's average beta_j / |gamma_j| (horizontal bar: +-1 std across units). Its units
    have different mu, so a layer's point need not lie exactly on the curve.
    """
    mus = np.linspace(-3.0, 3.0, 121)
    moments = [theory.relu_gaussian_moments(mu, 1.0) for mu in mus]
    fig = subplots(rows=1, cols=2, subplot_titles=("mean and std of ReLU(N(mu, 1))", "P(ReLU(N(mu, 1)) = 0) = Phi(-mu)"))
    fig.add_scatter(x=mus, y=[m.mean for m in moments], name="mean", line=dict(color="black", width=2),
                    hovertemplate="mu %{x:.2f}: mean %{y:.3f}<extra></extra>", row=1, col=1)
    fig.add_scatter(x=mus, y=[m.std for m in moments], name="standard deviation",
                    line=dict(color="black", width=2, dash="dot"),
                    hovertemplate="mu %{x:.2f}: std %{y:.3f}<extra></extra>", row=1, col=1)
    fig.add_scatter(x=mus, y=[m.p_zero for m in moments], name="fraction exactly 0",
                    line=dict(color="black", width=2, dash="dash"),
                    hovertemplate="mu %{x:.2f}: %{y:.1%} exactly 0<extra></extra>", row=1, col=2)
    title = "ReLU of a shifted unit Gaussian: what beta does"
    if history is not None and step is not None:
        snap = history.snapshot_at(step)
        for layer, name in enumerate(history.layer_names):
            norm, st = snap.norms.get(layer), snap.taps.get((layer, "post_activation"))
            if st is None or not has_finite_affine(norm):
                continue
            scale, beta = _scales(norm)
            mu = beta / scale
            fig.add_scatter(x=[mu.mean()], y=[st.zero_frac], mode="markers", name=f"{name}, recorded",
                            marker=dict(color=color(layer), size=10), error_x=dict(type="data", array=[mu.std()]),
                            hovertemplate=f"{name}: avg beta/gamma %{{x:.3f}}, %{{y:.1%}} exactly 0 recorded"
                                          "<extra></extra>", row=1, col=2)
        title += f"; points: BN→ReLU layers at step {snap.step}"
    fig.update_xaxes(title_text="mu (= beta / |gamma|)")
    fig.update_yaxes(title_text="in units of gamma", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", range=[0, 1], row=1, col=2)
    return styled(fig, title)
