"""Figures of the batch-size page: one input across batches, a batch of one, and the batch-size sweep."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..record import History
from ..experiments.sweeps import NORM_LABELS, BatchDependence, Sweep
from .common import color, styled, subplots

NORM_COLORS = {"batchnorm": color(0), "reference": color(0), "groupnorm": color(2), "layernorm": color(3),
               "none": "#7f7f7f"}


def batch_dependence(dep: BatchDependence) -> go.Figure:
    """Per class: the spread of the input's train-mode probability over random batches (box and
    points) and its eval-mode probability (diamond)."""
    fig = go.Figure()
    classes = np.arange(dep.eval_probs.shape[0])
    xs = np.repeat(classes, dep.train_probs.shape[0])
    ys = dep.train_probs.T.reshape(-1)
    fig.add_box(x=xs, y=ys, name=f"train mode: in {dep.train_probs.shape[0]} random batches of {dep.batch_size}",
                marker=dict(color=color(0), size=4), line=dict(color=color(0)), boxpoints="all", jitter=0.5,
                pointpos=0, hovertemplate="class %{x}<br>probability %{y:.3f}<extra>train mode, one batch</extra>")
    fig.add_scatter(x=classes, y=dep.eval_probs, mode="markers", name="eval mode (running statistics)",
                    marker=dict(color=color(1), symbol="diamond", size=13, line=dict(color="white", width=1)),
                    hovertemplate="class %{x}<br>probability %{y:.3f}<extra>eval mode</extra>")
    fig.update_xaxes(title_text=f"class (true class: {dep.label})", tickmode="array", tickvals=classes)
    fig.update_yaxes(title_text="softmax probability", range=[-0.02, 1.02])
    return styled(fig, f"Test sample #{dep.index}: its class probabilities depend on its batch in train mode")


def batch_dependence_by_size(deps: Sequence[BatchDependence]) -> go.Figure:
    """How far train-mode outputs are from eval mode, against the size of the batch the input is in."""
    sizes = [d.batch_size for d in deps]
    fig = go.Figure()
    fig.add_scatter(x=sizes, y=[d.total_variation for d in deps], mode="lines+markers",
                    name="mean total-variation distance", line=dict(color=color(0), width=2),
                    hovertemplate="batch of %{x}<br>distance %{y:.3f}"
                                  "<extra>0.5 * sum |p_train - p_eval|, mean over batches</extra>")
    fig.add_scatter(x=sizes, y=[d.flip_rate for d in deps], mode="lines+markers",
                    name="share of batches with another predicted class",
                    line=dict(color=color(1), width=2, dash="dot"),
                    hovertemplate="batch of %{x}<br>%{y:.1%} of batches"
                                  "<extra>prediction differs from eval mode</extra>")
    fig.update_xaxes(title_text="size of the batch the input is in (train-mode BN)", type="log", tickvals=sizes,
                     ticktext=[str(s) for s in sizes])
    fig.update_yaxes(title_text="distance / share", range=[0, 1.02])
    return styled(fig, "The larger the batch, the closer train mode gets to eval mode")


def batch_of_one(eval_probs: np.ndarray, one_probs: np.ndarray, labels: Sequence[int],
                 indices: Sequence[int]) -> go.Figure:
    """Eval mode on each input alone vs what train mode would give each input as a batch of one."""
    fig = subplots(rows=1, cols=2, shared_yaxes=True,
                   subplot_titles=("eval mode, each input alone",
                                        "train mode, each input as a batch of one (x_hat = 0)"))
    classes = np.arange(eval_probs.shape[1])
    for k, (idx, label) in enumerate(zip(indices, labels)):
        name = f"test sample #{idx} (class {label})"
        for col, probs in ((1, eval_probs), (2, one_probs)):
            fig.add_bar(x=classes, y=probs[k], name=name, marker_color=color(k), legendgroup=name,
                        showlegend=col == 1, row=1, col=col,
                        hovertemplate=f"{name}<br>class %{{x}}<br>probability %{{y:.3f}}<extra></extra>")
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="class", tickmode="array", tickvals=classes)
    fig.update_yaxes(title_text="softmax probability", range=[0, 1.02], row=1, col=1)
    return styled(fig, "Predicting one sample: eval mode works, train mode cannot")


def _size_axis(fig: go.Figure, sizes: Sequence[int], **where) -> None:
    fig.update_xaxes(title_text="batch size (samples per training step)", type="log", tickvals=list(sizes),
                     ticktext=[str(s) for s in sizes], **where)


def sweep_accuracy(sweep: Sweep) -> go.Figure:
    """Final eval-mode test accuracy against batch size, one line per normalization."""
    fig = go.Figure()
    sizes: set[int] = set()
    for norm in sweep.norms:
        pts = sweep.series(norm)
        xs = [p.batch_size for p in pts]
        sizes.update(xs)
        label = NORM_LABELS.get(norm, norm)
        fig.add_scatter(x=xs, y=[p.test_acc for p in pts], mode="lines+markers", name=label,
                        line=dict(color=NORM_COLORS.get(norm, color(4)), width=2.5),
                        hovertemplate=f"{label}<br>batch %{{x}}<br>test accuracy %{{y:.1%}}<extra>eval mode</extra>")
        if norm in ("batchnorm", "reference"):
            fig.add_scatter(x=xs, y=[p.test_acc_batch_stats for p in pts], mode="lines+markers",
                            name=f"{label}, test batches normalized by their own statistics",
                            line=dict(color=NORM_COLORS[norm], width=1.5, dash="dot"),
                            marker=dict(symbol="circle-open"),
                            hovertemplate=f"{label}, train-mode BN on test batches of the training size<br>"
                                          "batch %{x}<br>test accuracy %{y:.1%}<extra></extra>")
    _size_axis(fig, sorted(sizes))
    fig.update_yaxes(title_text="test accuracy after training (eval mode)", tickformat=".0%", range=[0, 1.02])
    return styled(fig, "Batch size sweep: BatchNorm degrades at small batches, per-sample norms hold")


def sweep_live(histories: Mapping[str, History]) -> go.Figure:
    """The sweep while it trains: latest eval accuracy of each run so far, by batch size."""
    series: dict[str, list[tuple[int, float]]] = {}
    for h in histories.values():
        if h.evals:
            series.setdefault(h.config.norm, []).append((h.config.batch_size, h.evals[-1].test_acc))
    fig = go.Figure()
    sizes: set[int] = set()
    for norm, pts in series.items():
        pts.sort()
        sizes.update(b for b, _ in pts)
        fig.add_scatter(x=[b for b, _ in pts], y=[a for _, a in pts], mode="lines+markers",
                        name=NORM_LABELS.get(norm, norm), line=dict(color=NORM_COLORS.get(norm, color(4))))
    _size_axis(fig, sorted(sizes))
    fig.update_yaxes(title_text="test accuracy (eval mode), latest evaluation", tickformat=".0%", range=[0, 1.02])
    return styled(fig, "Batch size sweep (training…)")


def sweep_noise(sweep: Sweep) -> go.Figure:
    """Noise of the first BN layer's batch mean against batch size: measured per channel vs sigma / sqrt(n)."""
    fig = go.Figure()
    pts = [p for p in sweep.points if p.noise is not None]
    pts.sort(key=lambda p: p.batch_size)
    sizes = [p.batch_size for p in pts]
    if pts:
        pooled = np.array([math.sqrt(np.sum(p.noise.measured_std ** 2) / np.sum(p.noise.sigma ** 2)) for p in pts])
        rel = [p.noise.relative_std for p in pts]
        q25, q75 = (np.array([np.percentile(r, q) for r in rel]) for q in (25, 75))
        fig.add_scatter(x=sizes, y=pooled, mode="markers+lines", name="measured (pooled over channels)",
                        line=dict(color=color(0), width=2),
                        error_y=dict(type="data", symmetric=False, array=np.maximum(q75 - pooled, 0),
                                     arrayminus=np.maximum(pooled - q25, 0), thickness=1),
                        customdata=np.array([[p.noise.pooled_ratio, len(p.noise.steps)] for p in pts]),
                        hovertemplate="batch %{x}<br>std of batch mean / sigma: %{y:.3f}, i.e. sqrt(sum of squared "
                                      "stds / sum of sigma^2) over channels (bars: 25th-75th percentile of single "
                                      "channels)<br>measured / theory: %{customdata[0]:.3f}<br>"
                                      "%{customdata[1]} recorded steps<extra></extra>")
        grid = np.geomspace(min(sizes), max(sizes), 60)
        fig.add_scatter(x=grid, y=1 / np.sqrt(grid), mode="lines", name="theory: 1 / sqrt(n)",
                        line=dict(color="black", dash="dash", width=1.5),
                        hovertemplate="n = %{x:.1f}<br>1/sqrt(n) = %{y:.3f}<extra>theory</extra>")
    _size_axis(fig, sizes)
    fig.update_yaxes(title_text="std of the batch mean over steps / sigma", type="log")
    return styled(fig, "Noise of BatchNorm's batch mean (first BN layer): measured vs sigma / sqrt(n)")
