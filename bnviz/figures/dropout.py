"""Figures of the dropout page: BN's input variance in train vs eval mode, against theory."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..experiments.variance_shift import LayerShift, StatisticsFix
from .common import color, styled, subplots


def ratio_by_layer(shifts: Mapping[str, Sequence[LayerShift]]) -> go.Figure:
    """Per ordering and BN layer: measured mean Var_train / Var_eval (bars) and theory (diamonds)."""
    fig = go.Figure()
    for i, (label, layers) in enumerate(shifts.items()):
        names = [s.name for s in layers]
        fig.add_bar(x=names, y=[s.mean_ratio for s in layers], name=label, marker_color=color(i), offsetgroup=str(i),
                    customdata=[[s.theory] for s in layers],
                    hovertemplate=f"{label}<br>%{{x}}: measured %{{y:.3f}}<extra>mean over units of "
                                  "Var_train / Var_eval of the BN input</extra>")
        theory_y = [s.mean_theory if s.mean_theory is not None else None for s in layers]
        fig.add_scatter(x=names, y=theory_y, mode="markers", name="theory (mean over units)", offsetgroup=str(i),
                        marker=dict(symbol="diamond", size=12, color="black", line=dict(color="white", width=1)),
                        customdata=[[s.theory] for s in layers], showlegend=i == 0,
                        legendgroup="theory",
                        hovertemplate="%{x}: theory %{y:.3f}<br>%{customdata[0]}<extra></extra>")
    fig.add_hline(y=1.0, line=dict(color="#888", dash="dot"))
    fig.update_layout(barmode="group", scattermode="group")
    fig.update_xaxes(title_text="BN layer")
    fig.update_yaxes(title_text="Var(BN input), train mode / eval mode")
    return styled(fig, "Variance shift at each BN layer: dropout on (training) vs off (evaluation)")


def ratio_vs_keep(keeps: Sequence[float], shifts: Sequence[Sequence[LayerShift]]) -> go.Figure:
    """Measured mean ratio per BN layer against the keep probability, with theory and 1/p."""
    fig = go.Figure()
    n_layers = max(len(s) for s in shifts)
    order = np.argsort(keeps)
    ks = np.asarray(keeps)[order]
    for layer in range(n_layers):
        rows = [shifts[j][layer] if layer < len(shifts[j]) else None for j in order]
        name = next(r.name for r in rows if r is not None)
        fig.add_scatter(x=ks, y=[r.mean_ratio if r else None for r in rows], mode="markers+lines",
                        name=f"{name}: measured", line=dict(color=color(layer), width=1.5),
                        marker=dict(size=9), legendgroup=name,
                        hovertemplate=f"{name}<br>keep p = %{{x:.2f}}<br>measured %{{y:.3f}}<extra></extra>")
        theory = [r.mean_theory if r else None for r in rows]
        if any(t is not None for t in theory):
            fig.add_scatter(x=ks, y=theory, mode="lines", name=f"{name}: theory", legendgroup=name,
                            line=dict(color=color(layer), dash="dash", width=2),
                            hovertemplate=f"{name}<br>keep p = %{{x:.2f}}<br>theory %{{y:.3f}}<extra>mean over "
                                          "units of the closed form with each unit's c, v</extra>")
    grid = np.linspace(min(keeps), 1.0, 50)
    fig.add_scatter(x=grid, y=1.0 / grid, mode="lines", name="1/p (zero-mean input)",
                    line=dict(color="black", dash="dot", width=1),
                    hovertemplate="p = %{x:.2f}<br>1/p = %{y:.3f}<extra></extra>")
    fig.update_xaxes(title_text="keep probability p = 1 - dropout rate")
    fig.update_yaxes(title_text="Var(BN input), train mode / eval mode")
    return styled(fig, "Variance shift against the keep probability")


def unit_scatter(shift: LayerShift) -> go.Figure:
    """One point per unit: measured ratio against the closed form."""
    fig = go.Figure()
    # A ratio needs a unit that varies in eval mode (a dead ReLU unit does not) and finite
    # variances (a diverged run has none).
    keep = (shift.eval_var > 0) & np.isfinite(shift.eval_var) & np.isfinite(shift.train_var)
    if shift.theory_ratio is not None:
        keep &= np.isfinite(shift.theory_ratio)
    measured = shift.train_var[keep] / shift.eval_var[keep]
    if not keep.any():
        fig.add_annotation(text=f"No unit of {shift.name} has a finite, nonzero variance in eval mode<br>"
                                "(every unit dead, or the run diverged): there is no ratio to draw.",
                           x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=14))
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    elif shift.theory_ratio is not None:
        theory = shift.theory_ratio[keep]
        lo, hi = float(min(measured.min(), theory.min())), float(max(measured.max(), theory.max()))
        fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="measured = theory",
                        line=dict(color="#888", dash="dash"), hoverinfo="skip")
        fig.add_scatter(x=theory, y=measured, mode="markers", name="one unit", marker=dict(color=color(0), size=7),
                        text=[f"unit {i}" for i in np.flatnonzero(keep)],
                        hovertemplate="%{text}<br>theory %{x:.3f}<br>measured %{y:.3f}<extra></extra>")
        fig.update_xaxes(title_text=f"theory: {shift.theory}")
    else:
        fig.add_histogram(x=measured, name="units", marker_color=color(0))
        fig.update_xaxes(title_text=f"measured ratio ({shift.theory})")
    fig.update_yaxes(title_text="measured Var_train / Var_eval" if shift.theory_ratio is not None else "units")
    return styled(fig, f"{shift.name}: every unit's variance shift, measured vs theory")


def accuracy_fix(fixes: Mapping[str, StatisticsFix]) -> go.Figure:
    """Eval accuracy and loss with running statistics vs statistics recomputed with dropout off."""
    fig = subplots(rows=1, cols=2,
                   subplot_titles=("test accuracy (eval mode)", "test loss (cross-entropy, eval mode)"))
    labels = list(fixes)
    for j, (attr_acc, attr_loss, name) in enumerate((("acc_running", "loss_running", "running statistics (as trained)"),
                                                     ("acc_recomputed", "loss_recomputed",
                                                      "statistics recomputed with dropout off"))):
        fig.add_bar(x=labels, y=[getattr(fixes[k], attr_acc) for k in labels], name=name, marker_color=color(j),
                    legendgroup=name, hovertemplate="%{x}<br>%{y:.1%}<extra>" + name + "</extra>", row=1, col=1)
        fig.add_bar(x=labels, y=[getattr(fixes[k], attr_loss) for k in labels], name=name, marker_color=color(j),
                    legendgroup=name, showlegend=False, hovertemplate="%{x}<br>%{y:.3f}<extra>" + name + "</extra>",
                    row=1, col=2)
    fig.update_layout(barmode="group")
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02], row=1, col=1)
    return styled(fig, "The fix: recompute BN statistics with dropout off")
