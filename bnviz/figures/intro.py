"""The home page's first picture: what BatchNorm's formula does to one feature of one batch.

numpy and plotly only (no torch): the home page draws it while the rest of the app is imported.
The values are a skewed sample on purpose: standardizing moves and rescales a distribution but
keeps its shape, so BN's output is not Gaussian unless its input was (a common misreading).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import color, styled

NAME = "batchnorm on one feature"


@dataclass(frozen=True)
class Standardized:
    """One feature of one batch through BN in training mode (the formula on the home page)."""

    x: np.ndarray        # the feature's values over the batch
    x_hat: np.ndarray    # (x - mean) / sqrt(var + eps), batch mean and biased batch variance
    y: np.ndarray        # gamma * x_hat + beta
    gamma: float
    beta: float
    eps: float


def standardize(x: np.ndarray, gamma: float, beta: float, eps: float = 1e-5) -> Standardized:
    x = np.asarray(x, dtype=np.float64)
    x_hat = (x - x.mean()) / np.sqrt(x.var() + eps)
    return Standardized(x=x, x_hat=x_hat, y=gamma * x_hat + beta, gamma=gamma, beta=beta, eps=eps)


def example_batch(n: int = 256, seed: int = 0) -> np.ndarray:
    """A right-skewed feature (gamma distribution, mean 3, std ~1.7): a ReLU-fed layer's kind of input."""
    return np.random.default_rng(seed).gamma(shape=3.0, scale=1.0, size=n)


def _skew(v: np.ndarray) -> float:
    d = v - v.mean()
    return float(np.mean(d ** 3) / np.mean(d ** 2) ** 1.5)


def standardization_figure(batch: Standardized | None = None) -> go.Figure:
    """Three histograms of the same batch: the input x, the standardized x-hat, and gamma * x-hat + beta."""
    b = batch or standardize(example_batch(), gamma=1.5, beta=0.5)
    panels = (("input x", b.x), ("standardized x&#770; = (x - &#956;<sub>B</sub>) / &#8730;(&#963;<sub>B</sub>&#178; + &#949;)", b.x_hat),
              (f"output y = &#947;x&#770; + &#946;  (&#947; = {b.gamma:g}, &#946; = {b.beta:g})", b.y))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[title for title, _ in panels], shared_yaxes=True)
    lo = min(float(v.min()) for _, v in panels)
    hi = max(float(v.max()) for _, v in panels)
    for i, (title, v) in enumerate(panels):
        fig.add_histogram(x=v, xbins=dict(start=lo, end=hi, size=(hi - lo) / 40), marker_color=color(i),
                          showlegend=False, name=title.split(" ")[0],
                          hovertemplate="value %{x}<br>%{y} values<extra></extra>", row=1, col=i + 1)
        fig.add_annotation(row=1, col=i + 1, xref="x domain", yref="y domain", x=0.98, y=0.95, showarrow=False,
                           align="right", text=f"mean {v.mean():.2f}<br>std {v.std():.2f}<br>skewness {_skew(v):.2f}")
    fig.update_xaxes(title_text="value", range=[lo, hi])
    fig.update_yaxes(title_text=f"count (batch of {len(b.x)})", row=1, col=1)
    return styled(fig, "BatchNorm on one feature of one batch: shifted and rescaled, same shape", height=360)
