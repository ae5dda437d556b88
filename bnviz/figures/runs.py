"""Figures of a run recorded with ``bnviz.watch``: its logged scalars, one layer's batch and running
statistics per channel, gamma and beta over training, and the BN doctor's evidence.

Pure functions of the numbers :class:`bnviz.store.StoredRun` reads back (a ``NormStats``, arrays
over steps, a :class:`bnviz.doctor.Finding`); the activation figures of ``figures.activations``
draw the same run's histories. Nothing here knows where the numbers came from.
"""
from __future__ import annotations

import math
import textwrap
from typing import Any, Mapping

import numpy as np
import plotly.graph_objects as go

from ..record import NormStats
from .common import HEIGHT, MARGIN, color, rgba, styled, subplots

# A gamma/beta figure draws one line per channel up to this many channels; beyond, a band.
MAX_CHANNEL_LINES = 16
BAND = (10, 50, 90)     # percentiles across channels: the band's edges and its middle line
TITLE_CHARS = 70        # an evidence chart's title is broken into lines of at most this many characters
STEP_AXIS = "step (weight updates)"   # as figures.activations labels it: the same axis on one page

# Names bnviz.watch itself records (with holdout=...), with what they are; other scalars keep
# the name they were logged under.
SCALAR_LABELS = {
    "loss": "training loss (as logged)",
    "holdout_loss": "held-out, running statistics (eval mode)",
    "holdout_precise_loss": "held-out, statistics recomputed (precise BN)",
    "holdout_acc": "held-out, running statistics (eval mode)",
    "holdout_precise_acc": "held-out, statistics recomputed (precise BN)",
    "holdout_mse": "held-out, running statistics (eval mode)",
    "holdout_precise_mse": "held-out, statistics recomputed (precise BN)",
}
_PANELS = (("loss", "loss"), ("accuracy", "acc"), ("mean squared error", "mse"))


def scalar_panels(names: list[str]) -> list[tuple[str, list[str]]]:
    """How :func:`scalar_curves` groups scalars: (panel title, names) in drawing order.

    Series named ``...loss``, ``...acc`` and ``...mse`` share a panel each (a training loss
    beside the held-out ones, the held-out accuracy with and without recomputed statistics);
    every other scalar gets its own panel, since its scale is its own.
    """
    panels, left = [], list(names)
    for title, suffix in _PANELS:
        group = [n for n in left if n == suffix or n.endswith(f"_{suffix}")]
        group.sort(key=lambda n: (n not in SCALAR_LABELS, list(SCALAR_LABELS).index(n) if n in SCALAR_LABELS else n))
        if group:
            panels.append((title, group))
            left = [n for n in left if n not in group]
    panels += [(name, [name]) for name in left]
    return panels


def legend_below(fig: go.Figure, entries: int, height: int) -> go.Figure:
    """A legend under the plot, for figures with more (and longer) entries than fit beside the
    title: about two entries a line at the export width."""
    lines = math.ceil(entries / 2)
    room = 90 + 22 * lines
    return fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-(60 / (height - MARGIN["t"] - room)),
                                         xanchor="left", x=0),
                             margin_b=room, height=height)


def scalar_color(name: str, k: int) -> str:
    """One colour per role across panels: the training loss, the held-out numbers with the running
    statistics, with recomputed ones; other scalars take the next colours, by position ``k``."""
    if name in SCALAR_LABELS:
        return color(2 if "precise" in name else 1 if name.startswith("holdout") else 0)
    return color(3 + k)


def scalar_curves(scalars: Mapping[str, tuple[np.ndarray, np.ndarray]], run_name: str) -> go.Figure:
    """Every scalar the run logged (``w.step(loss=..., ...)`` and bnviz's held-out evaluation)
    over the steps it was logged at; see :func:`scalar_panels` for which share a panel.

    A panel whose values are all positive and span more than a factor of 10 has a log y axis;
    one whose values all lie in [0, 1] under an "accuracy" title is drawn in percent.
    """
    panels = scalar_panels(list(scalars))
    if not panels:
        fig = go.Figure()
        fig.add_annotation(text="no scalars logged yet: pass them to w.step(loss=...)", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
        return styled(fig, f"{run_name}: logged scalars")
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = subplots(rows=rows, cols=cols, subplot_titles=[title for title, _ in panels],
                   horizontal_spacing=0.07, vertical_spacing=min(0.3, 0.5 / rows))
    for p, (title, names) in enumerate(panels):
        row, col = p // cols + 1, p % cols + 1
        finite = []
        for k, name in enumerate(names):
            steps, values = scalars[name]
            label = SCALAR_LABELS.get(name, name)
            marker = len(steps) <= 60 or name.startswith("holdout")
            fig.add_scatter(x=steps, y=values, name=f"{name}: {label}" if label != name else name,
                            mode="lines+markers" if marker else "lines", marker=dict(size=5),
                            line=dict(color=scalar_color(name, k), width=1.5 if name == "loss" else 2,
                                      dash="dash" if "precise" in name else None),
                            hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.4g}}<extra></extra>", row=row, col=col)
            finite.append(values[np.isfinite(values)])
        values = np.concatenate(finite) if finite else np.zeros(0)
        if title == "accuracy" and values.size and values.min() >= 0 and values.max() <= 1:
            fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=row, col=col)
        elif values.size and values.min() > 0 and values.max() > 10 * values.min():
            fig.update_yaxes(type="log", row=row, col=col)
    fig.update_xaxes(title_text=STEP_AXIS)
    styled(fig, f"{run_name}: logged scalars")
    return legend_below(fig, len(fig.data), 300 * rows + 160 + 22 * math.ceil(len(fig.data) / 2))


def batch_vs_running(ns: NormStats, layer: str, step: int, *, keeps_running: bool = True,
                     normalizes_with_batch: bool = True) -> go.Figure:
    """One norm layer at one recorded step, per channel: the batch mean and variance it normalized
    with against its running mean and variance (what eval mode uses).

    torch stores ``running_var`` unbiased (times n / (n - 1), n = ``ns.count`` values per channel)
    while BN normalizes a batch with the biased variance: both batch variances are drawn, so the
    running one compares like with like. Arrays a layer does not have (no running statistics, a
    step in eval mode) are left out, and the subtitle says so: ``keeps_running=False`` for a layer
    that has no running statistics at all (LayerNorm, GroupNorm, track_running_stats=False), and
    ``normalizes_with_batch=False`` for one whose statistics are each sample's own (LayerNorm,
    GroupNorm, InstanceNorm): the batch statistics are then drawn for reference only.
    """
    fig = subplots(rows=1, cols=2, subplot_titles=("mean per channel", "variance per channel"),
                   horizontal_spacing=0.08)
    n = int(ns.count)
    missing = []
    unbiased = None
    if ns.batch_var is not None and n > 1:
        unbiased = ns.batch_var.astype(np.float64) * (n / (n - 1))
    # The open diamond is drawn around the dot: with many values per channel the two batch
    # variances nearly coincide, and neither may hide the other.
    series = (
        (1, "batch mean", ns.batch_mean, 0, "circle", 7, "of this batch's values per channel"),
        (1, "running mean", ns.running_mean, 1, "x-thin-open", 9, "running_mean buffer after this step"),
        (2, "batch variance, biased" + (" (used to normalize)" if normalizes_with_batch else ""), ns.batch_var, 0,
         "circle", 7, "sum (x - mean)^2 / n"),
        (2, "batch variance, unbiased (x n/(n-1))", unbiased, 2, "diamond-open", 12, "sum (x - mean)^2 / (n - 1)"),
        (2, "running variance (unbiased, as torch stores it)", ns.running_var, 1, "x-thin-open", 9,
         "running_var buffer after this step"),
    )
    for col, name, values, c, symbol, size, what in series:
        if values is None:
            missing.append(name)
            continue
        channels = np.arange(len(values))
        fig.add_scatter(x=channels, y=values, mode="markers", name=name,
                        marker=dict(color=color(c), symbol=symbol, size=size if len(values) <= 64 else size * 0.6,
                                    line=dict(width=2, color=color(c))),
                        hovertemplate=f"{name}<br>channel %{{x}}<br>%{{y:.4g}}<extra>{what}</extra>", row=1, col=col)
    fig.update_xaxes(title_text="channel (0-based)")
    fig.update_yaxes(title_text="mean", row=1, col=1)
    fig.update_yaxes(title_text="variance", row=1, col=2)
    styled(fig, f"{layer}: batch {'vs running ' if keeps_running else ''}statistics per channel at step {step}")
    note = f"n = {n} values per channel in this batch"
    if not keeps_running:
        note += "; no running statistics: this layer keeps none"
        missing = [name for name in missing if not name.startswith("running")]
    if missing:
        note += "; not recorded: " + ", ".join(missing)
    fig.update_layout(title_subtitle_text=note)
    return legend_below(fig, len(fig.data), HEIGHT + 120)


def channel_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(10th, 50th, 90th) percentiles across channels at each step of (S, C) ``values``
    (numpy's linear interpolation; a step with a non-finite value gets NaN, drawn as a gap)."""
    with np.errstate(invalid="ignore"):
        lo, mid, hi = np.percentile(values.astype(np.float64), BAND, axis=1)
    return lo, mid, hi


def gamma_beta(steps: np.ndarray, weight: np.ndarray, bias: np.ndarray, layer: str) -> go.Figure:
    """gamma (weight) and beta (bias) of one norm layer over the recorded steps, (S, C) each.

    Up to :data:`MAX_CHANNEL_LINES` channels, one line per channel (the same colour in both
    panels); beyond, the median across channels with the 10th-90th percentile band.
    """
    fig = subplots(rows=1, cols=2, subplot_titles=("gamma (weight: scales the normalized value)",
                                                   "beta (bias: shifts it)"), horizontal_spacing=0.08)
    channels = weight.shape[1] if weight.ndim == 2 else 0
    for col, values in ((1, weight), (2, bias)):
        if channels <= MAX_CHANNEL_LINES:
            for ch in range(channels):
                fig.add_scatter(x=steps, y=values[:, ch], mode="lines", name=f"channel {ch}",
                                line=dict(color=color(ch), width=1.5), legendgroup=f"channel {ch}",
                                showlegend=col == 1,
                                hovertemplate=f"channel {ch}<br>step %{{x}}<br>%{{y:.4g}}<extra></extra>",
                                row=1, col=col)
            continue
        lo, mid, hi = channel_band(values)
        c = color(0)
        fig.add_scatter(x=steps, y=hi, mode="lines", line=dict(width=0.5, color=c), name="90th percentile",
                        legendgroup="band", showlegend=False, hovertemplate="step %{x}<br>90th %{y:.4g}<extra></extra>",
                        row=1, col=col)
        fig.add_scatter(x=steps, y=lo, mode="lines", line=dict(width=0.5, color=c), fill="tonexty",
                        fillcolor=rgba(c, 0.2), name=f"10th-90th percentile across {channels} channels",
                        legendgroup="band", showlegend=col == 1,
                        hovertemplate="step %{x}<br>10th %{y:.4g}<extra></extra>", row=1, col=col)
        fig.add_scatter(x=steps, y=mid, mode="lines", line=dict(width=2, color=c), name="median across channels",
                        legendgroup="median", showlegend=col == 1,
                        hovertemplate="step %{x}<br>median %{y:.4g}<extra></extra>", row=1, col=col)
    fig.update_xaxes(title_text=STEP_AXIS)
    fig.update_yaxes(title_text="gamma", row=1, col=1)
    fig.update_yaxes(title_text="beta", row=1, col=2)
    how = ("one line per channel" if channels <= MAX_CHANNEL_LINES
           else f"median and 10th-90th percentile of {channels} channels")
    return styled(fig, f"{layer}: gamma and beta over training ({how})")


def finding_evidence(finding: Any) -> go.Figure:
    """A BN doctor finding's evidence: each of ``finding.series`` over ``finding.steps``, on one
    y axis titled with ``finding.unit``."""
    fig = go.Figure()
    for k, (name, values) in enumerate(finding.series.items()):
        fig.add_scatter(x=finding.steps, y=values, name=name, mode="lines+markers", marker=dict(size=5),
                        line=dict(color=color(k), width=2),
                        hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.4g}}<extra></extra>")
    fig.update_xaxes(title_text=STEP_AXIS)
    fig.update_yaxes(title_text=finding.unit or "value")
    where = f" ({finding.layer})" if finding.layer else ""
    # drawn beside the finding's text, in part of the page's width: a long title is broken in two,
    # and the legend goes below, off the title
    title = "<br>".join(textwrap.wrap(f"Evidence: {finding.title}{where}", TITLE_CHARS, break_long_words=False,
                                      break_on_hyphens=False))
    styled(fig, title)
    return legend_below(fig, len(fig.data), 380 + 22 * math.ceil(len(fig.data) / 2))
