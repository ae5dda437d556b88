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
from .histograms import recorded_steps

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


def make_figures(config: Config, trained: Mapping[str, Run], *, layer: int | None = None, step: int | None = None,
                 log_y: bool = False) -> dict[str, go.Figure]:
    """The page's figures; the defaults (last hidden layer, last step) are what the export writes.
    Figures of the BN->ReLU run alone are left out when that run is missing."""
    histories = {label: run.history for label, run in trained.items()}
    first = next(iter(histories.values()))
    layer = len(first.layer_names) - 1 if layer is None else layer
    step = recorded_steps(trained)[-1] if step is None else step
    out = {"next-layer input": figs.next_layer_input(histories, layer, step, log_y=log_y)}
    bn_relu = histories.get(BN_RELU)
    if bn_relu is not None:
        out["BN-ReLU vs rectified Gaussian"] = figs.rectified_gaussian_check(bn_relu, step)
    out["moments across depth"] = figs.relu_moments(histories, step)
    if bn_relu is not None:
        out["gamma and beta over training"] = figs.gamma_beta_over_training(bn_relu)
        out["ReLU of a shifted Gaussian"] = figs.shifted_relu_theory(bn_relu, step)
    return out


VIEW = View(slug="relu", title="ReLU after BN", default=DEFAULT, runs=runs, figures=make_figures)
