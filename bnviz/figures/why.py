"""Figures of the Why-BN-helps view: learning-rate sweep, loss-landscape smoothness, noisy BN."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..experiments.landscape import LandscapeRun
from ..seeds import ACCURACY, band
from ..train import Curves
from ..experiments.lr_sweep import SweepPoint, largest_stable
from .common import color, rgba, styled, subplots
from .seeds import add_band


def lr_sweep(points: Sequence[SweepPoint], steps: int) -> go.Figure:
    """Final training loss and test accuracy against the learning rate, with and without BN.

    Filled markers: stable runs; open: trained without diverging but did not halve the loss;
    crosses: diverged (NaN/inf loss), drawn at the top of the loss panel and at 0 accuracy.
    A dashed line marks each variant's largest stable learning rate.
    """
    fig = subplots(rows=1, cols=2, subplot_titles=(
        "final training loss (mean of the last 10% of steps)", "test accuracy at the end (eval mode)"))
    labels = list(dict.fromkeys(p.label for p in points))
    finite = [p.final_loss for p in points if np.isfinite(p.final_loss)]
    top = max(finite) * 3 if finite else 10.0
    for i, label in enumerate(labels):
        pts = [p for p in points if p.label == label]
        c = color(i)
        lrs = [p.lr for p in pts]
        loss = [p.final_loss if p.diverged_at is None else np.nan for p in pts]
        acc = [p.test_acc if p.diverged_at is None else np.nan for p in pts]
        symbols = ["circle" if p.stable else "circle-open" for p in pts]
        status = [("stable" if p.stable else "did not halve the loss") if p.diverged_at is None
                  else f"diverged at step {p.diverged_at}" for p in pts]
        for col, values in ((1, loss), (2, acc)):
            fig.add_scatter(x=lrs, y=values, name=label, mode="lines+markers", legendgroup=label, showlegend=col == 1,
                            line=dict(color=c), marker=dict(symbol=symbols, size=10, color=c), customdata=status,
                            hovertemplate=f"{label}<br>lr %{{x:g}}<br>%{{y:.4g}}<br>%{{customdata}}<extra></extra>",
                            row=1, col=col)
        diverged = [p for p in pts if p.diverged_at is not None]
        if diverged:
            text = [f"diverged at step {p.diverged_at}" for p in diverged]
            for col, y in ((1, top), (2, 0.0)):
                fig.add_scatter(x=[p.lr for p in diverged], y=[y] * len(diverged), mode="markers",
                                name=f"{label}: diverged", legendgroup=label, showlegend=col == 1,
                                marker=dict(symbol="x", size=12, color=c), customdata=text,
                                hovertemplate=f"{label}<br>lr %{{x:g}}<br>%{{customdata}}<extra></extra>",
                                row=1, col=col)
        best = largest_stable(points, label)
        if best is not None:
            for col in (1, 2):
                fig.add_vline(x=best, line=dict(color=c, dash="dash", width=1), row=1, col=col)
            fig.add_annotation(x=np.log10(best), y=0.3 - 0.1 * i, yref="y2 domain", xref="x2", xanchor="right",
                               text=f"largest stable, {label}: {best:g} ", showarrow=False, font=dict(color=c),
                               bgcolor="rgba(255,255,255,0.8)")
    fig.update_xaxes(type="log", title_text="learning rate (log scale)")
    fig.update_yaxes(type="log", title_text="cross-entropy", row=1, col=1)
    fig.update_yaxes(range=[-0.03, 1.05], tickformat=".0%", row=1, col=2)
    return styled(fig, f"Learning-rate sweep: the same network trained {steps} steps at each rate")


def _band(fig: go.Figure, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, c: str, label: str, what: str,
          col: int) -> None:
    fig.add_scatter(x=x, y=hi, mode="lines", line=dict(width=0.5, color=c), name=f"{label}: max {what}",
                    legendgroup=label, showlegend=False, row=1, col=col)
    fig.add_scatter(x=x, y=lo, mode="lines", line=dict(width=0.5, color=c), fill="tonexty", fillcolor=rgba(c, 0.25),
                    name=f"{label}: min {what}", legendgroup=label, showlegend=False, row=1, col=col)


def landscape(runs: Mapping[str, LandscapeRun]) -> go.Figure:
    """Santurkar et al.'s Figure 4 for our runs: (a) range of the loss along the gradient, (b) range
    of the gradient change, (c) effective beta-smoothness, each at the probed training steps."""
    fig = subplots(rows=1, cols=3, subplot_titles=(
        "(a) loss along the gradient", "(b) gradient predictiveness", "(c) effective β-smoothness"))
    for i, (label, run) in enumerate(runs.items()):
        c = color(i)
        steps = np.asarray([p.step for p in run.probes])
        if not len(steps):
            continue
        losses = np.array([np.append(p.losses, p.loss0) for p in run.probes])
        _band(fig, steps, losses.min(axis=1), losses.max(axis=1), c, label, "loss", 1)
        fig.add_scatter(x=steps, y=[p.loss0 for p in run.probes], name=label, legendgroup=label,
                        line=dict(color=c, width=2), hovertemplate=f"{label}<br>step %{{x}}<br>L(w) %{{y:.4f}}"
                                                                   "<extra></extra>", row=1, col=1)
        diffs = np.array([p.grad_diffs for p in run.probes])
        _band(fig, steps, diffs.min(axis=1), diffs.max(axis=1), c, label, "gradient change", 2)
        _, beta = run.series("beta")
        fig.add_scatter(x=steps, y=beta, name=label, legendgroup=label, showlegend=False, mode="lines+markers",
                        line=dict(color=c, width=2), hovertemplate=f"{label}<br>step %{{x}}<br>beta %{{y:.3g}}"
                                                                   "<extra></extra>", row=1, col=3)
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="L(w - eta g), min to max over eta", row=1, col=1)
    fig.update_yaxes(title_text="||g - grad L(w - eta g)||, min to max", row=1, col=2)
    fig.update_yaxes(title_text="max over eta of ||grad change|| / ||eta g||", row=1, col=3)
    return styled(fig, f"Loss landscape along the gradient during training, {_span(next(iter(runs.values())))}",
                  height=440)


def _span(run: LandscapeRun) -> str:
    lr = run.config.lr
    etas = run.probes[0].etas if run.probes else np.array([])
    return f"eta from {etas.min():.3g} to {etas.max():.3g} (= {etas.min() / lr:g} to {etas.max() / lr:g} x lr)" \
        if len(etas) else "no probes"


def landscape_over_seeds(runs: Mapping[str, Sequence[LandscapeRun]]) -> go.Figure:
    """:func:`landscape` over seeds (``runs[label][k]``: seed k's run): at each probed step the mean
    and 95 % t-interval over seeds of (a) the loss range along the gradient, (b) the largest
    gradient change, (c) the effective beta -- the per-probe numbers the page's metrics summarize."""
    fig = subplots(rows=1, cols=3, subplot_titles=(
        "(a) loss range along the gradient", "(b) gradient predictiveness", "(c) effective β-smoothness"))
    for i, (label, rs) in enumerate(runs.items()):
        for col, name in enumerate(("loss_range", "max_grad_diff", "beta"), start=1):
            add_band(fig, band([r.series(name) for r in rs]), name=label, c=color(i), row=1, col=col,
                     showlegend=col == 1, mode="lines+markers")
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="max - min over eta of L(w - eta g) (eta = 0 included)", row=1, col=1)
    fig.update_yaxes(title_text="max over eta of ||g - grad L(w - eta g)||", row=1, col=2)
    fig.update_yaxes(title_text="max over eta of ||grad change|| / ||eta g||", row=1, col=3)
    n = max(len(rs) for rs in runs.values())
    first = next(iter(runs.values()))[0]
    return styled(fig, f"Loss landscape along the gradient, mean and 95 % CI over {n} seeds, {_span(first)}",
                  height=440)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window or window <= 1:
        return values
    kernel = np.ones(window) / window
    head = np.cumsum(values[:window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def noisy_training(curves: Mapping[str, Curves], window: int = 10) -> go.Figure:
    """Training loss (moving average of ``window`` steps) and eval-mode test accuracy per run."""
    fig = subplots(rows=1, cols=2, subplot_titles=(
        f"training loss (cross-entropy, moving average of {window} steps)", "test accuracy (eval mode)"))
    for i, (label, cur) in enumerate(curves.items()):
        c = color(i)
        fig.add_scatter(x=np.arange(len(cur.loss)), y=_smooth(cur.loss, window), name=label, legendgroup=label,
                        line=dict(color=c, width=1.5), row=1, col=1)
        fig.add_scatter(x=cur.eval_steps, y=cur.test_acc, name=label, legendgroup=label, showlegend=False,
                        mode="lines+markers", line=dict(color=c, width=2), row=1, col=2)
    fig.update_xaxes(title_text="step (weight updates)")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    return styled(fig, "BN with random shifts and scales after every BN layer still trains")


def _smoothed_loss(cur: Curves, window: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(len(cur.loss)), _smooth(cur.loss, window)


def noisy_training_over_seeds(curves: Mapping[str, Sequence[Curves]], window: int = 10) -> go.Figure:
    """:func:`noisy_training` over seeds (``curves[label][k]``: seed k's run): at each step the mean
    and 95 % t-interval over seeds of the smoothed training loss and of the test accuracy."""
    fig = subplots(rows=1, cols=2, subplot_titles=(
        f"training loss (cross-entropy, moving average of {window} steps)", "test accuracy (eval mode)"))
    for i, (label, cs) in enumerate(curves.items()):
        add_band(fig, band([_smoothed_loss(c, window) for c in cs]), name=label, c=color(i), row=1, col=1)
        accuracy = band([(c.eval_steps, c.test_acc) for c in cs], bounds=ACCURACY)
        add_band(fig, accuracy, name=label, c=color(i), row=1, col=2,
                 showlegend=False, mode="lines+markers")
    fig.update_xaxes(title_text="step (weight updates)")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    n = max(len(cs) for cs in curves.values())
    return styled(fig, f"BN with random shifts and scales after every BN layer still trains (mean and 95 % CI over "
                       f"{n} seeds)")
