"""Figures of the BN-across-devices page: accuracy against the per-device batch, each process's
batch statistics, and the running statistics with and without buffer broadcast."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..experiments.data_parallel import MODES, Study, Variant
from .common import color, styled, subplots

SHOWN_CHANNELS = 16


def accuracy_by_per_device(study: Study) -> go.Figure:
    """Rank 0's final eval-mode test accuracy against the per-device batch, plain vs synchronized BN."""
    fig = go.Figure()
    w = study.world_size
    for i, mode in enumerate(MODES):
        chosen = [v for v in study.variants if v.mode == mode and v.broadcast_buffers]
        sizes = [v.per_device for v in chosen]
        fig.add_scatter(x=sizes, y=[study.accuracy(v) for v in chosen], name=mode, mode="lines+markers",
                        line=dict(color=color(i), width=2), customdata=[w * b for b in sizes],
                        hovertemplate=f"{mode}<br>%{{x}} per device, global batch %{{customdata}}"
                                      "<br>test accuracy %{y:.1%}<extra>rank 0, eval mode</extra>")
    sizes = sorted({v.per_device for v in study.variants})
    fig.update_xaxes(title_text=f"per-device batch b (global batch = {w} x b)", type="log", tickvals=sizes,
                     ticktext=[str(s) for s in sizes])
    fig.update_yaxes(title_text="test accuracy after training (eval mode)", tickformat=".0%")
    return styled(fig, f"{w} processes: the per-device batch, not the global one, sets plain BN's behaviour")


def batch_statistics(study: Study, per_device: int) -> go.Figure:
    """Per channel of the first BN layer's input at the last recorded step: each process's mean
    over its own per-device batch (as its recorder saw it) and the mean each normalizes by. Plain
    BN normalizes by its own; synchronized BN by the global one, the average of the processes'
    means (every per-device batch has ``per_device`` samples)."""
    fig = subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=MODES)
    symbols = ("circle", "diamond", "square", "x")
    for col, mode in enumerate(MODES, start=1):
        records = [r for r in study.per_rank(Variant(mode, per_device)) if len(r.steps)]
        for rank, rec in enumerate(records):
            means = rec.batch_mean[-1][:SHOWN_CHANNELS]
            fig.add_scatter(x=np.arange(len(means)), y=means, mode="markers", name=f"process {rank}: its own batch",
                            legendgroup=f"rank{rank}", showlegend=col == 1,
                            marker=dict(color=color(rank), size=9, symbol=symbols[rank % 4], opacity=0.8),
                            row=1, col=col, hovertemplate=f"process {rank}<br>channel %{{x}}<br>mean %{{y:.4g}}"
                                                          f"<extra>its {per_device} samples, step {int(rec.steps[-1])}</extra>")
        if mode == "synchronized BN" and records:
            shared = np.mean([r.batch_mean[-1][:SHOWN_CHANNELS] for r in records], axis=0)
            fig.add_scatter(x=np.arange(len(shared)), y=shared, mode="markers", row=1, col=col,
                            name="synchronized BN normalizes by: the global batch",
                            marker=dict(color="black", size=16, symbol="line-ew-open", line=dict(width=3)),
                            hovertemplate="channel %{x}<br>global mean %{y:.4g}"
                                          f"<extra>all {len(records) * per_device} samples</extra>")
    fig.update_xaxes(title_text=f"channel of the first BN layer (first {SHOWN_CHANNELS})")
    fig.update_yaxes(title_text="batch mean of the BN input", row=1, col=1)
    return styled(fig, f"The statistics each process normalizes by ({per_device} per device)")


def running_statistics(study: Study, per_device: int, channel: int = 0) -> go.Figure:
    """Running mean of one channel of the first BN layer over training, per process: plain BN with
    and without buffer broadcast, and synchronized BN."""
    variants = [Variant("plain BN", per_device), Variant("plain BN", per_device, broadcast_buffers=False),
                Variant("synchronized BN", per_device)]
    titles = ("plain BN, broadcast_buffers=True", "plain BN, broadcast_buffers=False", "synchronized BN")
    fig = subplots(rows=1, cols=3, shared_yaxes=True, subplot_titles=titles)
    for col, variant in enumerate(variants, start=1):
        for rank, rec in enumerate(study.per_rank(variant)):
            if not len(rec.steps) or channel >= rec.running_mean.shape[1]:
                continue
            fig.add_scatter(x=rec.steps, y=rec.running_mean[:, channel], mode="lines", name=f"process {rank}",
                            legendgroup=f"rank{rank}", showlegend=col == 1,
                            line=dict(color=color(rank), width=2, dash=["solid", "dash", "dot", "dashdot"][rank % 4]),
                            row=1, col=col, hovertemplate=f"process {rank}<br>step %{{x}}<br>running mean %{{y:.4g}}"
                                                          "<extra></extra>")
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text=f"running mean, channel {channel}", row=1, col=1)
    return styled(fig, f"Running statistics per process ({per_device} per device, channel {channel})")
