"""ReLU after BN: what the next layer receives for BN->ReLU, ReLU->BN and no BN.

Three runs of the same ReLU network (same seed, data and batches) that differ only in where
BatchNorm sits, or whether there is one. The BN->ReLU run is compared with the rectified
Gaussian its learned gamma and beta predict (:mod:`bnviz.figures.relu`).
"""
from __future__ import annotations

from typing import Mapping

import plotly.graph_objects as go

from ..config import Config
from ..figures import relu as figs
from ..models import build
from ..train import Run
from . import View
from .histograms import default_layer, histories, recorded_steps

# Adam moves gamma and beta visibly within 1,000 steps; plain SGD at lr 0.05 barely does.
DEFAULT = Config(optimizer="adam", lr=0.01)
BN_RELU, RELU_BN, NO_BN = "BN→ReLU", "ReLU→BN", "no BN"
PART_NAMES = {"norm": "BN", "act": "ReLU", "dropout": "Dropout"}


def runs(config: Config) -> dict[str, Config]:
    """BN before the ReLU, BN after it, and no BN; everything else as ``config``."""
    bn = config.replace(activation="relu", norm=config.norm if config.norm in ("batchnorm", "reference") else "batchnorm")
    return {BN_RELU: bn.replace(placement="before"), RELU_BN: bn.replace(placement="after"),
            NO_BN: bn.replace(norm="none", placement="before")}


def ordering(config: Config) -> str:
    """The layers of ``config``'s network in the order a value meets them, read off a built model."""
    model = build(config, (2,), 2)
    block = " → ".join(["Linear"] + [PART_NAMES[part] for part in model.blocks[0].order])
    head = " → ".join(["Dropout"] * (len(model.head) - 1) + ["Linear (classifier)"])
    return f"[{block}] × {len(model.blocks)} → {head}"


def _step(trained: Mapping[str, Run], step: int | None) -> int:
    return recorded_steps(trained)[-1] if step is None else step


# One builder per figure, so a page redraws only the figures whose settings changed. Those of the
# BN->ReLU run alone are None when that run is missing.
def next_layer_input(trained: Mapping[str, Run], *, layer: int | None = None, step: int | None = None,
                     log_y: bool = False) -> go.Figure:
    layer = default_layer(trained) if layer is None else layer
    return figs.next_layer_input(histories(trained), layer, _step(trained, step), log_y=log_y)


def rectified_gaussian_check(trained: Mapping[str, Run], *, step: int | None = None) -> go.Figure | None:
    run = trained.get(BN_RELU)
    return None if run is None else figs.rectified_gaussian_check(run.history, _step(trained, step))


def relu_moments(trained: Mapping[str, Run], *, step: int | None = None) -> go.Figure:
    return figs.relu_moments(histories(trained), _step(trained, step))


def gamma_beta_over_training(trained: Mapping[str, Run]) -> go.Figure | None:
    run = trained.get(BN_RELU)
    return None if run is None else figs.gamma_beta_over_training(run.history)


def shifted_relu_theory(trained: Mapping[str, Run], *, step: int | None = None) -> go.Figure | None:
    run = trained.get(BN_RELU)
    return None if run is None else figs.shifted_relu_theory(run.history, _step(trained, step))


def make_figures(config: Config, trained: Mapping[str, Run], *, layer: int | None = None, step: int | None = None,
                 log_y: bool = False) -> dict[str, go.Figure]:
    """The page's figures; the defaults (last hidden layer, last step) are what the export writes.
    Figures of the BN->ReLU run alone are left out when that run is missing."""
    out = {"next-layer input": next_layer_input(trained, layer=layer, step=step, log_y=log_y),
           "BN-ReLU vs rectified Gaussian": rectified_gaussian_check(trained, step=step),
           "moments across depth": relu_moments(trained, step=step),
           "gamma and beta over training": gamma_beta_over_training(trained),
           "ReLU of a shifted Gaussian": shifted_relu_theory(trained, step=step)}
    return {name: fig for name, fig in out.items() if fig is not None}


VIEW = View(slug="relu", title="ReLU after BN", default=DEFAULT, runs=runs, figures=make_figures)
