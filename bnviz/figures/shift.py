"""Figures of the precise-BN / domain-shift page."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import plotly.graph_objects as go

from ..experiments.adapt import FirstLayerStats, PreciseCurve, ShiftCurve, Transfer
from .common import HEIGHT, color, styled, subplots


def precise_bn(curves: Mapping[str, PreciseCurve]) -> go.Figure:
    """Test accuracy and loss against the number of batches precise BN averages, with each
    momentum's moving-average result as a horizontal line."""
    fig = subplots(rows=1, cols=2, subplot_titles=("test accuracy (eval mode)", "test loss (cross-entropy)"))
    drawn: list[np.ndarray] = []
    for i, (label, c) in enumerate(curves.items()):
        ns = list(c.n_batches)
        for col, ema, fmt in ((1, c.ema.acc, ".1%"), (2, c.ema.loss, ".3f")):
            fig.add_scatter(x=[ns[0], ns[-1]], y=[ema, ema], mode="lines", name=f"moving average, {label}",
                            line=dict(color=color(i), dash="dash", width=2), legendgroup=label, showlegend=col == 1,
                            hovertemplate=f"{label}: running statistics as trained<br>%{{y:{fmt}}}<extra></extra>",
                            row=1, col=col)
        same = any(np.array_equal(c.acc, d) for d in drawn)
        if not same:
            drawn.append(c.acc)
            name = "precise BN" if len(drawn) == 1 else f"precise BN ({label})"
            for col, values, fmt in ((1, c.acc, ".1%"), (2, c.loss, ".3f")):
                mean = values.mean(axis=1)
                fig.add_scatter(x=ns, y=mean, mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1,
                                line=dict(color="black", width=2.5),
                                error_y=dict(type="data", symmetric=False, array=values.max(axis=1) - mean,
                                             arrayminus=mean - values.min(axis=1), thickness=1),
                                hovertemplate=f"N = %{{x}} batches<br>mean over {values.shape[1]} draws %{{y:{fmt}}}"
                                              "<extra>precise BN (bars: min to max)</extra>", row=1, col=col)
        if i == 0:
            for col, pop, fmt in ((1, c.population.acc, ".1%"), (2, c.population.loss, ".3f")):
                fig.add_scatter(x=[ns[0], ns[-1]], y=[pop, pop], mode="lines", name="population statistics (N → all)",
                                line=dict(color="#888", dash="dot", width=1.5), legendgroup="population",
                                showlegend=col == 1, row=1, col=col,
                                hovertemplate=f"whole training set as one batch<br>%{{y:{fmt}}}<extra></extra>")
    ticks = list(next(iter(curves.values())).n_batches) if curves else []
    fig.update_xaxes(title_text="N: batches averaged by precise BN", type="log", tickvals=ticks,
                     ticktext=[str(t) for t in ticks])
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    styled(fig, "Precise BN: recompute the statistics at the final weights", height=HEIGHT + 80)
    # One legend entry per momentum: below the panels, where there is room for all of them.
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
                      margin=dict(b=130))
    return fig


def shift_curve(curve: ShiftCurve, amount: float | None = None) -> go.Figure:
    """Target accuracy against the shift amount: source statistics vs AdaBN."""
    fig = go.Figure()
    fig.add_scatter(x=curve.amounts, y=curve.frozen, mode="lines+markers", name="source statistics (frozen)",
                    line=dict(color=color(1), width=2.5),
                    hovertemplate="amount %{x:g}<br>%{y:.1%}<extra>eval mode, running statistics of the source</extra>")
    fig.add_scatter(x=curve.amounts, y=curve.adapted, mode="lines+markers",
                    name="AdaBN: statistics of the target inputs",
                    line=dict(color=color(2), width=2.5),
                    hovertemplate="amount %{x:g}<br>%{y:.1%}<extra>BN statistics re-estimated on the shifted test "
                                  "inputs, no labels</extra>")
    if amount is not None:
        fig.add_vline(x=amount, line=dict(color="#888", dash="dot"))
    fig.update_xaxes(title_text=f"shift amount ({curve.kind})")
    fig.update_yaxes(title_text="test accuracy on the shifted domain", tickformat=".0%", range=[0, 1.02])
    return styled(fig, f"Covariate shift ({curve.kind}): frozen source statistics vs AdaBN")


def first_layer(stats: FirstLayerStats) -> go.Figure:
    """Per channel of the first BN layer: the target's statistics against the source running ones."""
    fig = subplots(rows=1, cols=2, subplot_titles=("mean", "variance (unbiased)"))
    for col, src, tgt in ((1, stats.source_mean, stats.target_mean), (2, stats.source_var, stats.target_var)):
        lo, hi = float(min(src.min(), tgt.min())), float(max(src.max(), tgt.max()))
        fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="#888", dash="dash"),
                        name="target = source", showlegend=col == 1, hoverinfo="skip", row=1, col=col)
        fig.add_scatter(x=src, y=tgt, mode="markers", marker=dict(color=color(0), size=7), name="one channel",
                        showlegend=col == 1, text=[f"channel {i}" for i in range(len(src))],
                        hovertemplate="%{text}<br>source %{x:.3f}<br>target %{y:.3f}<extra></extra>", row=1, col=col)
    fig.update_xaxes(title_text="source running statistic")
    fig.update_yaxes(title_text="target statistic (AdaBN)", row=1, col=1)
    return styled(fig, "First BN layer: what AdaBN changes")


def transfer(result: Transfer) -> go.Figure:
    """Target test accuracy of every approach at one shift."""
    items = [("source model, no shift", result.source_on_source, "#7f7f7f"),
             ("frozen source statistics", result.frozen, color(1)),
             ("AdaBN (no labels)", result.adabn, color(2)),
             (f"fine-tuned, BN frozen ({result.n_labelled} labels)", result.finetune_frozen_bn, color(3)),
             (f"fine-tuned, BN trainable ({result.n_labelled} labels)", result.finetune_trainable_bn, color(4))]
    fig = go.Figure()
    fig.add_bar(x=[name for name, _, _ in items], y=[s.acc for _, s, _ in items],
                marker_color=[c for _, _, c in items], customdata=[[s.loss] for _, s, _ in items],
                text=[f"{s.acc:.1%}" for _, s, _ in items], textposition="outside",
                hovertemplate="%{x}<br>accuracy %{y:.1%}<br>loss %{customdata[0]:.3f}<extra></extra>")
    fig.update_yaxes(title_text="test accuracy (eval mode)", tickformat=".0%", range=[0, 1.1])
    return styled(fig, "Transfer to the shifted domain")
