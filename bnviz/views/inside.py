"""Inside BN: Algorithm 1 step by step, BatchNorm2d per channel on digit images, whitening vs BN.

Three independent parts. The tiny batch and the whitening demo need no training; the per-channel
part trains a small CNN with BatchNorm2d on the 8x8 digits (the page's Config) and taps its first
conv block on a batch of test images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import plotly.graph_objects as go

from ..experiments import bn_steps, whitening
from ..config import Config
from ..data import correlated_gaussian
from ..figures import inside as figs
from ..models import CNN_CHANNELS
from ..train import Run
from . import View
from .settings import snap

DEFAULT = Config(dataset="digits-image", arch="cnn", steps=300, batch_size=32, lr=0.05, record_every=50,
                 eval_every=100)
N_IMAGES = 6
N_POINTS = 500
WIDTHS = np.array([8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096])
GAPS = np.append(np.logspace(0, -6, 13), 0.0)


@dataclass(frozen=True)
class Settings:
    """The page's display controls (not Config fields): kept in the URL, redraw without training."""

    batch_seed: int = 0       # seeds the tiny batch and the 2-D points
    gamma: float = 1.0        # BN's scale, the same for every feature of the tiny batch
    beta: float = 0.0         # BN's shift
    correlation: float = 0.8  # of the 2-D data
    scale: float = 3.0        # std of feature 2 / std of feature 1
    channel: int = 0          # conv channel shown (0-based)


OPTIONS: dict[str, tuple[Any, ...]] = {
    "gamma": (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
    "beta": (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0),
    "correlation": (-0.99, -0.9, -0.8, -0.5, -0.2, 0.0, 0.2, 0.5, 0.8, 0.9, 0.99),
    "scale": (0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0),
    "channel": tuple(range(CNN_CHANNELS[0])),
}
SEED_RANGE = (0, 9999)


def coerce(name: str, raw: Any) -> tuple[Any, str | None]:
    """A display setting from the URL (a string) or a widget, as the control can show it.

    Never raises: a non-number keeps the default, a number not offered snaps to the nearest option
    (or into the seed range), each with a note for the page to show.
    """
    options = range(SEED_RANGE[0], SEED_RANGE[1] + 1) if name == "batch_seed" else OPTIONS[name]
    return snap(name, raw, getattr(Settings(), name), options)


def runs(config: Config) -> dict[str, Config]:
    return {"CNN with BatchNorm2d": config}


def tiny_batch(settings: Settings) -> bn_steps.BatchSteps:
    x = bn_steps.example_batch(settings.batch_seed)
    return bn_steps.batch_steps(x, settings.gamma, settings.beta)


def whitened(settings: Settings) -> dict[str, np.ndarray]:
    """The 2-D points raw, standardized per feature, PCA- and ZCA-whitened."""
    x = correlated_gaussian(N_POINTS, settings.correlation, (1.0, settings.scale), seed=settings.batch_seed)
    return {"raw data": x, "standardized (what BN does)": whitening.standardize(x),
            "PCA-whitened": whitening.pca_whitening(x).apply(x), "ZCA-whitened": whitening.zca_whitening(x).apply(x)}


def channel_view(run: Run) -> bn_steps.ConvChannels | None:
    """The first conv block on a batch of test images; None when the run kept no model."""
    if run.model is None or run.dataset is None:
        return None
    images = run.dataset.x_test[:max(run.config.batch_size, 2)]
    return bn_steps.conv_channels(run.model, images)


def batch_figure(settings: Settings) -> go.Figure:
    return figs.batch_steps(tiny_batch(settings))


def conv_figures(channels: bn_steps.ConvChannels, labels: np.ndarray, settings: Settings) -> dict[str, go.Figure]:
    n = min(N_IMAGES, len(channels.images))
    return {
        "input digit images": figs.digit_grid(channels.images[:n], f"The first {n} of the {len(channels.images)} "
                                              "test images in the batch (standardized pixels)",
                                              [f"image {i + 1}: a {labels[i]}" for i in range(n)]),
        "conv feature maps": figs.feature_maps(channels, settings.channel, n),
        "per-channel statistics": figs.channel_bars(channels, settings.channel),
    }


def whitening_figures(data: Mapping[str, np.ndarray]) -> dict[str, go.Figure]:
    """Scatter and covariance matrices of :func:`whitened`'s point sets."""
    return {
        "whitening scatter": figs.whitening_scatter(data),
        "covariance matrices": figs.covariance_matrices({k: whitening.covariance(v) for k, v in data.items()}),
    }


def cost_figures(batch: int) -> dict[str, go.Figure]:
    return {
        "whitening cost": figs.whitening_cost(WIDTHS, batch, whitening.batchnorm_flops(batch, WIDTHS),
                                              whitening.whitening_flops(batch, WIDTHS)),
        "eigendecomposition gradient": figs.eigh_gradient(GAPS, whitening.eigh_gradient_errors(GAPS)),
    }


def make_figures(config: Config, trained: Mapping[str, Run], settings: Settings = Settings()) -> dict[str, go.Figure]:
    out = {"Algorithm 1 step by step": batch_figure(settings)}
    for run in trained.values():
        channels = channel_view(run)
        if channels is not None:
            out.update(conv_figures(channels, run.dataset.y_test.numpy(), settings))
    out.update(whitening_figures(whitened(settings)))
    out.update(cost_figures(config.batch_size))
    return out


VIEW = View(slug="inside", title="Inside BN, step by step", default=DEFAULT, runs=runs, figures=make_figures)
