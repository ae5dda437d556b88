"""Figures of the Inside-BN view: Algorithm 1 on a tiny batch, BatchNorm2d per channel, whitening."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import plotly.graph_objects as go

from ..experiments.bn_steps import BatchSteps, ConvChannels
from .common import color, styled, subplots


def _value_heatmap(values: np.ndarray, rows: list[str], cols: list[str], zmax: float, name: str) -> go.Heatmap:
    return go.Heatmap(z=values, x=cols, y=rows, zmin=-zmax, zmax=zmax, zmid=0, colorscale="RdBu_r",
                      showscale=False, text=np.vectorize(lambda v: f"{v:.3f}")(values), texttemplate="%{text}",
                      name=name, hovertemplate=f"{name}<br>%{{y}}, %{{x}}: %{{z:.6f}}<extra></extra>")


def batch_steps(steps: BatchSteps) -> go.Figure:
    """The batch at each line of Algorithm 1: x, (mu_B, sigma^2_B), x_hat, y = gamma x_hat + beta."""
    m, d = steps.x.shape
    samples = [f"sample {i + 1}" for i in range(m)]
    features = [f"feature {j + 1}" for j in range(d)]
    panels = [
        ("input x", steps.x, samples),
        ("batch mean and variance", np.vstack([steps.mean, steps.var]), ["mu_B", "sigma²_B"]),
        ("normalized x_hat", steps.x_hat, samples),
        ("y = gamma x_hat + beta", steps.y, samples),
    ]
    fig = subplots(rows=1, cols=4, subplot_titles=[p[0] for p in panels], horizontal_spacing=0.07)
    for i, (name, values, rows) in enumerate(panels):
        zmax = float(np.max(np.abs(values))) or 1.0
        fig.add_trace(_value_heatmap(values, rows, features, zmax, name), row=1, col=i + 1)
        fig.update_yaxes(autorange="reversed", showticklabels=i in (0, 1), row=1, col=i + 1)
    return styled(fig, f"Algorithm 1 on a batch of {m} samples x {d} features "
                       f"(gamma = {_vector(steps.gamma)}, beta = {_vector(steps.beta)}, eps = {steps.eps:g})",
                  height=360)


def _vector(v: np.ndarray) -> str:
    if np.all(v == v[0]):
        return f"{v[0]:g}"
    return "(" + ", ".join(f"{x:g}" for x in v) + ")"


def digit_grid(images: np.ndarray, title: str, labels: list[str] | None = None) -> go.Figure:
    """A row of grey-scale images (N, H, W), each in its own panel."""
    n = len(images)
    fig = subplots(rows=1, cols=n, subplot_titles=labels, horizontal_spacing=0.02)
    for i, img in enumerate(images):
        fig.add_trace(go.Heatmap(z=img, colorscale="Greys", reversescale=True, showscale=False,
                                 name=labels[i] if labels else f"image {i + 1}",
                                 hovertemplate="row %{y}, col %{x}: %{z:.2f}<extra></extra>"), row=1, col=i + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed", scaleanchor="x")
    return styled(fig, title, height=260)


def feature_maps(channels: ConvChannels, channel: int, n_images: int) -> go.Figure:
    """Channel ``channel`` of the conv output (top) and of BatchNorm2d's output (bottom) for the
    first ``n_images`` images; one colour scale per row."""
    conv, bn = channels.conv[:n_images, channel], channels.bn[:n_images, channel]
    fig = subplots(rows=2, cols=n_images, horizontal_spacing=0.02, vertical_spacing=0.12,
                   row_titles=["conv output", "after BN"])
    for row, (maps, name) in enumerate(((conv, "conv output"), (bn, "BatchNorm2d output"))):
        lo, hi = float(maps.min()), float(maps.max())
        for i, fmap in enumerate(maps):
            fig.add_trace(go.Heatmap(z=fmap, zmin=lo, zmax=hi, colorscale="Viridis", showscale=i == n_images - 1,
                                     colorbar=dict(len=0.42, y=0.79 if row == 0 else 0.21),
                                     name=f"{name}, image {i + 1}",
                                     hovertemplate=f"{name}<br>row %{{y}}, col %{{x}}: %{{z:.3f}}<extra></extra>"),
                          row=row + 1, col=i + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed", scaleanchor="x")
    mean, var = channels.batch_mean[channel], channels.batch_var[channel]
    return styled(fig, f"Channel {channel + 1} of conv 1: before and after BatchNorm2d "
                       f"(batch mean {mean:.3f}, variance {var:.3f} over {channels.conv.shape[0]} images x "
                       f"{channels.conv.shape[2]}x{channels.conv.shape[3]} positions)", height=420)


def channel_bars(channels: ConvChannels, highlight: int | None = None) -> go.Figure:
    """Per-channel mean and variance of the conv output: this batch's (reduced over axes 0, 2, 3)
    and BatchNorm2d's running estimates."""
    c = len(channels.batch_mean)
    names = [f"ch {i + 1}" for i in range(c)]
    fig = subplots(rows=1, cols=2, subplot_titles=("mean per channel", "variance per channel"))
    series = (("this batch", channels.batch_mean, channels.batch_var, 0),
              ("running estimate (eval mode)", channels.running_mean, channels.running_var, 1))
    for label, mean, var, i in series:
        for col, values in ((1, mean), (2, var)):
            fig.add_bar(x=names, y=values, name=label, marker_color=color(i), legendgroup=label, showlegend=col == 1,
                        marker_line=dict(width=[3 if k == highlight else 0 for k in range(c)], color="black"),
                        hovertemplate=f"{label}<br>%{{x}}: %{{y:.4f}}<extra></extra>", row=1, col=col)
    fig.update_layout(barmode="group")
    return styled(fig, f"BatchNorm2d statistics of conv 1, one per channel (batch of {channels.conv.shape[0]} images)",
                  height=380)


def whitening_scatter(data: Mapping[str, np.ndarray]) -> go.Figure:
    """One scatter per transform of the same 2-D points, on equal axes."""
    fig = subplots(rows=1, cols=len(data), subplot_titles=list(data), horizontal_spacing=0.05)
    for i, (name, pts) in enumerate(data.items()):
        fig.add_scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", name=name, showlegend=False,
                        marker=dict(size=4, color=color(i), opacity=0.6),
                        hovertemplate="x1 %{x:.2f}<br>x2 %{y:.2f}<extra></extra>", row=1, col=i + 1)
        reach = float(np.max(np.abs(pts))) * 1.05 or 1.0
        fig.update_xaxes(range=[-reach, reach], title_text="feature 1", row=1, col=i + 1)
        fig.update_yaxes(range=[-reach, reach], scaleanchor=f"x{i + 1 if i else ''}", row=1, col=i + 1)
    fig.update_yaxes(title_text="feature 2", row=1, col=1)
    return styled(fig, "Correlated 2-D data: standardized per feature vs whitened", height=400)


def covariance_matrices(covs: Mapping[str, np.ndarray]) -> go.Figure:
    """The 2x2 covariance matrix of each version of the data, numbers written in the cells."""
    fig = subplots(rows=1, cols=len(covs), subplot_titles=list(covs), horizontal_spacing=0.05)
    labels = ["feature 1", "feature 2"]
    for i, (name, cov) in enumerate(covs.items()):
        zmax = float(np.max(np.abs(cov))) or 1.0
        fig.add_trace(_value_heatmap(cov, labels, labels, zmax, name), row=1, col=i + 1)
        fig.update_yaxes(autorange="reversed", showticklabels=i == 0, row=1, col=i + 1)
    return styled(fig, "Covariance matrices (biased, 1/n): standardization keeps the off-diagonal correlation, "
                       "whitening makes it the identity", height=330)


def whitening_cost(widths: np.ndarray, batch: int, bn_flops: np.ndarray, white_flops: np.ndarray) -> go.Figure:
    """Operations per mini-batch forward pass vs layer width, log-log."""
    fig = go.Figure()
    fig.add_scatter(x=widths, y=bn_flops, name="BatchNorm (per feature): ~7 m d", line=dict(color=color(0)))
    fig.add_scatter(x=widths, y=white_flops, name="full whitening: ~4 m d² + 11 d³", line=dict(color=color(1)))
    fig.update_xaxes(type="log", title_text="features d (units of the layer)")
    fig.update_yaxes(type="log", title_text="floating-point operations per batch")
    return styled(fig, f"Cost of normalizing one batch of m = {batch} samples", height=380)


def _percent(x: float) -> str:
    return f"{x:.1%}" if np.isfinite(x) else "NaN (the gradient is not a number)"


def eigh_gradient(gaps: np.ndarray, errors: Mapping[str, np.ndarray]) -> go.Figure:
    """Relative error of the ZCA gradient through torch.linalg.eigh vs the eigenvalue gap; a gap of
    exactly 0 (which a log axis cannot show) is reported in the title."""
    fig = go.Figure()
    positive = gaps > 0
    for i, (name, err) in enumerate(errors.items()):
        fig.add_scatter(x=gaps[positive], y=err[positive], name=f"autograd through eigh, {name}",
                        mode="lines+markers", line=dict(color=color(i)))
    fig.update_xaxes(type="log", autorange="reversed", exponentformat="power",
                     title_text="gap between the two eigenvalues of the covariance (they are 1 ± gap/2)")
    fig.update_yaxes(type="log", exponentformat="power", title_text="relative error of dLoss/dx")
    title = "Backpropagating through an eigendecomposition: the gradient degrades as the eigenvalues meet"
    if not positive.all():
        at_zero = ", ".join(f"{name} {_percent(err[~positive][0])}" for name, err in errors.items())
        title += f"<br><sub>equal eigenvalues (gap 0): relative error {at_zero}</sub>"
    styled(fig, title, height=400)
    # Top left is empty (small errors at wide gaps): the legend there leaves the subtitle readable.
    fig.update_layout(legend=dict(orientation="v", x=0.01, y=0.98, xanchor="left", yanchor="top"))
    return fig
