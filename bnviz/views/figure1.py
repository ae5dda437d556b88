"""Ioffe & Szegedy (2015), Figure 1: their MNIST setup run on the bundled digits (or local MNIST).

Their setup (section 4.1): 3 fully connected hidden layers of 100 sigmoid units, a 10-way softmax
output, mini-batches of 60, trained for 50,000 steps; BN added to every hidden layer before the
nonlinearity. Figure 1 shows (a) test accuracy over training with and without BN and (b, c) the
15th, 50th and 85th percentiles of one last-hidden-layer sigmoid's input over training.

What differs here: the data (scikit-learn's 1,797 8x8 digits, 1,437 to train and 360 to test,
instead of 60,000 + 10,000 28x28 MNIST images), 2,000 steps instead of 50,000 (about 83 epochs of
the small set), PyTorch's default uniform initialization instead of "small random Gaussian values",
and plain SGD with learning rate 0.3 (the paper does not give its rate). With MNIST files on disk
the same preset trains on 20,000 MNIST training images.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

from .. import data
from ..config import Config
from ..figures.figure1 import figure1
from ..figures.seeds import replace_with_bands
from ..train import Run
from . import View

DEFAULT = Config(dataset="digits", activation="sigmoid", depth=3, width=100, batch_size=60, lr=0.3, steps=2000,
                 optimizer="sgd", norm="batchnorm", placement="before", record_every=20, eval_every=50)
MNIST_SAMPLES = 20_000
WITH, WITHOUT = "with BN", "without BN"


def runs(config: Config) -> dict[str, Config]:
    return {WITH: config.replace(norm="batchnorm"), WITHOUT: config.without_norm()}


def on_mnist(config: Config) -> Config:
    """The preset on local MNIST files: 20,000 training images (the loader's largest subsample)."""
    return config.replace(dataset="mnist", n_samples=MNIST_SAMPLES)


def mnist_missing() -> str | None:
    """None when the MNIST files are on disk, else the loader's message saying where to put them.

    Only looks at file names, so it is instant; a file that is there but broken is reported when a
    run loads it.
    """
    folder = data.data_dir("mnist")
    idx = all((folder / name).is_file() or (folder / f"{name}.gz").is_file() for name in data.IDX_FILES.values())
    if idx or (folder / "mnist.npz").is_file():
        return None
    try:
        data.load_mnist(folder, "mnist")
    except data.DataNotFoundError as exc:
        return str(exc)
    return None


def last_layer(config: Config) -> int:
    return config.depth - 1


def make_figures(config: Config, trained: Mapping[str, Run],
                 over_seeds: Mapping[str, Sequence[Run]] | None = None) -> dict[str, go.Figure]:
    """The figure; with runs at several seeds (``over_seeds``), panel (a) shows their mean and 95 %
    band, and panels (b, c), one run's percentiles, stay those of ``trained`` (the page's seed)."""
    histories = {label: trained[label].history for label in (WITH, WITHOUT) if label in trained}
    if len(histories) < 2:
        return {}
    fig = figure1(histories, last_layer(config), with_bn=WITH, without_bn=WITHOUT)
    if over_seeds and min(len(over_seeds.get(label, ())) for label in histories) > 1:
        replace_with_bands(fig, {label: [r.history for r in over_seeds[label]] for label in histories},
                           row=1, col=1, suffix=": test accuracy")
    return {"Figure 1 reproduction": fig}


VIEW = View(slug="figure1", title="Ioffe & Szegedy 2015, Figure 1", default=DEFAULT, runs=runs, figures=make_figures)
