"""Figures of the small-batch remedies page: accuracy against batch size, and on two-class batches."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..experiments.small_batch import RemedyStudy, by_label
from .common import color, rgba, styled, subplots


def sweep(study: RemedyStudy) -> go.Figure:
    """Final eval-mode test accuracy against the batch size, one line per normalization."""
    fig = go.Figure()
    for i, (label, runs) in enumerate(by_label(study.sweep).items()):
        fig.add_scatter(x=[r.batch_size for r in runs], y=[r.final_acc for r in runs], name=label,
                        mode="lines+markers", line=dict(color=color(i), width=2),
                        hovertemplate=f"{label}<br>batch %{{x}}<br>test accuracy %{{y:.1%}}<extra>eval mode</extra>")
    sizes = list(study.batch_sizes)
    fig.update_xaxes(title_text="batch size (samples per step)", type="log", tickvals=sizes,
                     ticktext=[str(s) for s in sizes])
    fig.update_yaxes(title_text="test accuracy after training (eval mode)", tickformat=".0%")
    return styled(fig, "Small batches: BN against its remedies, i.i.d. batches")


def two_class(study: RemedyStudy) -> go.Figure:
    """Left: final eval-mode test accuracy per normalization, i.i.d. vs two-class batches.
    Right: eval-mode test accuracy during training on two-class batches."""
    fig = subplots(rows=1, cols=2, subplot_titles=("after training", "during training, two-class batches"))
    runs = by_label(study.two_class)
    labels = list(runs)
    for j, sampling in enumerate(("iid", "two-class")):
        acc = [next(r.final_acc for r in runs[label] if r.sampling == sampling) for label in labels]
        name = "i.i.d. batches" if sampling == "iid" else "two-class batches"
        fig.add_bar(x=labels, y=acc, name=name, marker_color=["#7f7f7f", color(1)][j], row=1, col=1,
                    hovertemplate="%{x}<br>test accuracy %{y:.1%}" + f"<extra>{name}</extra>")
    for i, label in enumerate(labels):
        run = next(r for r in runs[label] if r.sampling == "two-class")
        fig.add_scatter(x=run.eval_steps, y=run.test_acc, name=label, mode="lines+markers", showlegend=False,
                        line=dict(color=color(i), width=2), row=1, col=2,
                        hovertemplate=f"{label}<br>step %{{x}}<br>test accuracy %{{y:.1%}}<extra></extra>")
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="test accuracy (eval mode)", tickformat=".0%", range=[0, 1.02])
    fig.update_xaxes(title_text="step (weight updates)", row=1, col=2)
    batch = study.two_class[0].batch_size if study.two_class else 0
    return styled(fig, f"Batches of two classes each (batch {batch}): eval mode meets statistics it never trained with")



def renorm_factors(study: RemedyStudy) -> go.Figure:
    """Batch Renorm's r and d in its first layer at every step of the two-class run: the median and
    the range over channels, and the clipping limits of the schedule."""
    run = next((r for r in study.two_class if r.remedy == "renorm" and r.sampling == "two-class"), None)
    fig = subplots(rows=1, cols=2, subplot_titles=("r = clip(sigma_B / sigma)", "d = clip((mu_B - mu) / sigma)"))
    if run is None or run.renorm_r is None:
        return styled(fig, "Batch Renorm's corrections (no Batch Renorm run)")
    steps = np.arange(len(run.renorm_r))
    for col, (values, low, high) in enumerate(((run.renorm_r, 1 / run.renorm_limits[:, 0], run.renorm_limits[:, 0]),
                                               (run.renorm_d, -run.renorm_limits[:, 1], run.renorm_limits[:, 1])),
                                              start=1):
        name = "rd"[col - 1]
        fig.add_scatter(x=steps, y=values.max(axis=1), mode="lines", line=dict(width=0), showlegend=False,
                        hoverinfo="skip", row=1, col=col)
        fig.add_scatter(x=steps, y=values.min(axis=1), mode="lines", line=dict(width=0), fill="tonexty",
                        fillcolor=rgba(color(1), 0.25), name="range over channels", legendgroup="range",
                        showlegend=col == 1, hoverinfo="skip", row=1, col=col)
        fig.add_scatter(x=steps, y=np.median(values, axis=1), mode="lines", line=dict(color=color(1), width=2),
                        name="median over channels", legendgroup="median", showlegend=col == 1, row=1, col=col,
                        hovertemplate=f"step %{{x}}<br>median {name} %{{y:.3f}}<extra></extra>")
        for bound in (low, high):
            fig.add_scatter(x=steps, y=bound, mode="lines", line=dict(color="#7f7f7f", dash="dot"),
                            name="clipping limits", legendgroup="limits", showlegend=col == 1 and bound is low,
                            row=1, col=col, hovertemplate=f"step %{{x}}<br>limit %{{y:.3f}}<extra></extra>")
    fig.update_xaxes(title_text="step")
    return styled(fig, f"Batch Renorm's corrections in its first layer, two-class batches of {run.batch_size}")
