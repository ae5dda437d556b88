"""Which values share statistics: BN, LN, IN and GN sets on a trained CNN's activation tensor (Wu & He 2018).

One plain training run (the CNN with BatchNorm, through :func:`bnviz.train.train`); the tensor is
its first (or second) convolution's output on :data:`N_SHOWN` test images, recorded by the recorder;
everything else is arithmetic on that tensor (:mod:`bnviz.experiments.shared_statistics`).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import plotly.graph_objects as go

from ..config import Config
from ..experiments import shared_statistics as experiment
from ..figures import shared_statistics as figs
from ..train import Run
from . import View

DEFAULT = Config(arch="cnn", dataset="digits-image", steps=100, eval_every=50)
N_SHOWN = 8                       # samples of the tensor shown (and BatchNorm's batch here)
LAYERS = {"conv 1": 0, "conv 2": 1}
DEFAULT_ENTRY = (1, 2, 3, 4)      # (n, c, h, w)
DEFAULT_GROUPS = 2
LABEL = "trained CNN"


def runs(config: Config) -> dict[str, Config]:
    return {LABEL: config.replace(arch="cnn", norm="batchnorm")}


def tensor(run: Run, layer: str) -> np.ndarray:
    """``layer``'s activation tensor on the first :data:`N_SHOWN` test images: (N, C, H, W)."""
    return experiment.activation_tensor(run.model, run.dataset.x_test[:N_SHOWN], LAYERS[layer])


def compute(x: np.ndarray, entry: experiment.Entry, groups: int) -> list[experiment.Shared]:
    return [experiment.shared_statistics(x, entry, method, groups) for method in experiment.METHODS]


def figure(x: np.ndarray, shared: list[experiment.Shared], entry: experiment.Entry) -> go.Figure:
    return figs.shared_sets(x, shared, entry)


def make_figures(config: Config, trained: Mapping[str, Run]) -> dict[str, go.Figure]:
    x = tensor(trained[LABEL], "conv 1")
    entry = experiment.clamp_entry(DEFAULT_ENTRY, x.shape)
    return {"which values share statistics": figure(x, compute(x, entry, DEFAULT_GROUPS), entry)}


VIEW = View(slug="shared", title="Which values share statistics", default=DEFAULT, runs=runs, figures=make_figures)
