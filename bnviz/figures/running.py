"""Figures of BatchNorm's running statistics: a simulated stream, and a training network.

Pure functions from numbers to ``plotly.graph_objects.Figure``. The stream figures draw the
running estimates of :mod:`bnviz.experiments.streams` with their expected value and a +-2 standard deviation
band; the network figures draw a layer's running statistics against the population statistics of
the current weights (:class:`RunningVsPopulation`) and the three ways of evaluating a BN network.
Curves are passed as ``{label: data}``; colours follow the order of the mapping.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import plotly.graph_objects as go

from ..record import History
from ..experiments.streams import Stream
from .common import color, rgba, styled, subplots

TRUE_COLOR = "#222222"
STREAM_TITLES = {"mean": "Running mean", "var": "Running variance (unbiased, as torch stores it)",
                 "var_biased": "Running biased variance (divide by n)"}


@dataclass(frozen=True)
class Estimate:
    """One running estimate of a stream statistic after t = 0..T updates, with its theory band."""

    values: np.ndarray    # (T + 1,)
    expected: np.ndarray  # (T + 1,) expected value of the estimate
    sd: np.ndarray        # (T + 1,) its standard deviation


def stream_estimates(stream: Stream, stat: str, estimates: Mapping[str, Estimate]) -> go.Figure:
    """Running estimates of one statistic of a simulated stream against its true value.

    For each momentum: the estimate (solid), its expected value (dotted) and the band expected
    value +- 2 standard deviations (shaded), which holds the estimate about 95% of the time.
    """
    t = np.arange(stream.spec.n_batches + 1)
    fig = go.Figure()
    true = stream.true_mean if stat == "mean" else stream.true_var
    true_name = "true mean" if stat == "mean" else "true variance"
    fig.add_scatter(x=t[1:], y=true, name=true_name, line=dict(color=TRUE_COLOR, width=2.5, shape="hv"))
    if stat == "var_biased":
        n = stream.spec.batch_size
        fig.add_scatter(x=t[1:], y=true * (n - 1) / n, name="(n-1)/n x true variance",
                        line=dict(color=TRUE_COLOR, width=1.5, dash="dash", shape="hv"))
    for i, (label, est) in enumerate(estimates.items()):
        c = color(i)
        lo, hi = est.expected - 2 * est.sd, est.expected + 2 * est.sd
        fig.add_scatter(x=np.concatenate([t, t[::-1]]), y=np.concatenate([hi, lo[::-1]]), fill="toself",
                        fillcolor=rgba(c, 0.13), line=dict(width=0), name=f"{label}: expected +- 2 sd",
                        legendgroup=label, showlegend=False, hoverinfo="skip")
        fig.add_scatter(x=t, y=est.expected, name=f"{label}: expected", line=dict(color=c, width=1, dash="dot"),
                        legendgroup=label, showlegend=False,
                        hovertemplate=f"{label}<br>after %{{x}} batches<br>expected %{{y:.4g}}<extra></extra>")
        fig.add_scatter(x=t, y=est.values, name=label, line=dict(color=c, width=1.8), legendgroup=label,
                        hovertemplate=f"{label}<br>after %{{x}} batches<br>estimate %{{y:.4g}}<extra></extra>")
    fig.update_xaxes(title_text="batches seen (updates of the running statistics)")
    fig.update_yaxes(title_text="mean" if stat == "mean" else "variance")
    return styled(fig, f"{STREAM_TITLES[stat]} vs momentum, batches of n = {stream.spec.batch_size}")


@dataclass(frozen=True)
class RunningVsPopulation:
    """A BN layer's running statistics next to the population statistics of the same weights.

    Row p holds step ``steps[p]``: the running mean / variance after that step's forward pass
    (which used the weights after ``steps[p]`` updates) and the population mean / unbiased
    variance of the layer's input under those weights, over the training set. Shapes (P, C).
    """

    steps: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    population_mean: np.ndarray
    population_var: np.ndarray
    eps: float

    def mean_error(self) -> np.ndarray:
        """Channel-averaged |running mean - population mean| / sqrt(population var + eps), (P,):
        the shift of the normalized output in eval mode, in units of its intended std."""
        return np.mean(np.abs(self.running_mean - self.population_mean)
                       / np.sqrt(self.population_var + self.eps), axis=1)

    def var_error(self) -> np.ndarray:
        """Channel-averaged |running var - population var| / (population var + eps), (P,)."""
        return np.mean(np.abs(self.running_var - self.population_var) / (self.population_var + self.eps), axis=1)


def population_error(comparisons: Mapping[str, RunningVsPopulation], layer_name: str) -> go.Figure:
    """How far the running statistics are from the current weights' population statistics."""
    fig = subplots(rows=1, cols=2, subplot_titles=(
        "mean: avg |running - pop.| / sqrt(pop. var + eps)",
        "variance: avg |running - pop.| / (pop. var + eps)"))
    for i, (label, cmp) in enumerate(comparisons.items()):
        for col, err in ((1, cmp.mean_error()), (2, cmp.var_error())):
            fig.add_scatter(x=cmp.steps, y=err, name=label, mode="lines+markers", marker=dict(size=4),
                            line=dict(color=color(i), width=2), legendgroup=label, showlegend=col == 1,
                            hovertemplate=f"{label}<br>step %{{x}}<br>error %{{y:.3g}}<extra></extra>",
                            row=1, col=col)
    fig.update_xaxes(title_text="step (weight updates)")
    fig.update_yaxes(type="log", title_text="averaged over channels (log scale)", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    return styled(fig, f"{layer_name}: running statistics vs population statistics of the current weights")


def population_scatter(comparisons: Mapping[str, RunningVsPopulation], step: int, layer_name: str) -> go.Figure:
    """Per channel: running statistic (y) against population statistic (x) at ``step``;
    on the diagonal the running statistics are exact."""
    fig = subplots(rows=1, cols=2, subplot_titles=("mean, one point per channel",
                                                        "variance, one point per channel"))
    lo = {1: np.inf, 2: np.inf}
    hi = {1: -np.inf, 2: -np.inf}
    for i, (label, cmp) in enumerate(comparisons.items()):
        matches = np.flatnonzero(cmp.steps == step)
        if not len(matches):
            continue
        p = int(matches[0])
        pairs = ((1, cmp.population_mean[p], cmp.running_mean[p]), (2, cmp.population_var[p], cmp.running_var[p]))
        for col, x, y in pairs:
            fig.add_scatter(x=x, y=y, mode="markers", name=label, legendgroup=label, showlegend=col == 1,
                            marker=dict(color=color(i), size=6, opacity=0.7),
                            hovertemplate=f"{label}<br>population %{{x:.4g}}<br>running %{{y:.4g}}<extra></extra>",
                            row=1, col=col)
            finite = np.concatenate([x, y])
            finite = finite[np.isfinite(finite)]
            if finite.size:
                lo[col], hi[col] = min(lo[col], finite.min()), max(hi[col], finite.max())
    for col in (1, 2):
        if np.isfinite(lo[col]):
            fig.add_scatter(x=[lo[col], hi[col]], y=[lo[col], hi[col]], mode="lines", name="running = population",
                            line=dict(color=TRUE_COLOR, dash="dash", width=1), showlegend=col == 1,
                            legendgroup="diagonal", hoverinfo="skip", row=1, col=col)
    fig.update_xaxes(title_text="population statistic (current weights, training set)")
    fig.update_yaxes(title_text="running statistic (BN buffer)", row=1, col=1)
    return styled(fig, f"{layer_name}: running vs population statistics per channel at step {step}")


EVAL_KINDS = (
    ("test_acc", "running statistics (eval mode)", color(0), "solid"),
    ("test_acc_population", "population statistics (recomputed)", color(2), "dash"),
    ("test_acc_batch_stats", "batch statistics (train-mode BN)", color(1), "dot"),
)


def eval_accuracy(histories: Mapping[str, History]) -> go.Figure:
    """Test accuracy over training, one panel per momentum, for the three ways BN can normalize."""
    labels = list(histories)
    fig = subplots(rows=1, cols=max(len(labels), 1), subplot_titles=labels, shared_yaxes=True)
    for col, (label, h) in enumerate(histories.items(), start=1):
        for key, name, c, dash in EVAL_KINDS:
            steps, acc = h.eval_curve(key)
            fig.add_scatter(x=steps, y=acc, name=name, mode="lines", line=dict(color=c, dash=dash, width=2),
                            legendgroup=key, showlegend=col == 1,
                            hovertemplate=f"{label}<br>{name}<br>step %{{x}}: %{{y:.1%}}<extra></extra>",
                            row=1, col=col)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    fig.update_yaxes(title_text="test accuracy", row=1, col=1)
    return styled(fig, "Test accuracy with running, population and batch statistics")
