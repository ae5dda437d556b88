"""Dropout's variance shift at BatchNorm: measured on a trained network, and its closed forms.

Inverted dropout keeps a unit with probability p and scales it by 1/p, which keeps the mean but
raises the variance in training: for an input of mean c and variance v it is (c^2 + v)/p - c^2
in training and v in evaluation (Li, Chen, Hu & Yang, "Understanding the Disharmony between
Dropout and Batch Normalization by Variance Shift", CVPR 2019). A BN layer after the dropout
learns running statistics of the larger training variance and then, in eval mode, divides the
smaller one by it: its outputs shrink, and the shift compounds through deeper layers.

:func:`measure_variance_shift` taps every BN layer's input on a copy of a trained network, once
in training mode (dropout on, BN normalizing with the statistics of the whole set as one batch)
and once in eval mode, for the same data and weights, and sets the measured per-unit ratio
Var_train / Var_eval against theory:

* dropout directly before BN (``dropout_position="before_norm"``, or BN after the activation):
  ``theory.dropout_variance_ratio(c, v, p)`` with c, v the per-unit mean and variance of the
  dropout input;
* dropout, then a Linear layer, then BN (the MLP's ``"after_activation"``, the usual
  BN-ReLU-dropout block followed by the next layer): :func:`linear_after_dropout_ratio`.

With masks independent of the values both are exact in expectation for the first BN after the
input; deeper layers also inherit the shift of the layers before, so they measure above the
single-layer prediction. :func:`recomputed_statistics_accuracy` is the fix Li et al. discuss:
recompute the BN statistics with dropout off and compare eval accuracy before and after.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import theory
from ..models import Net, accuracy, loss_fn
from ..recorder import Recorder
from ..train import accuracy_with_stats, population_statistics, preserved_norm_state


def linear_after_dropout_ratio(weight: np.ndarray, second_moment: np.ndarray, eval_var: np.ndarray,
                               keep: float) -> np.ndarray:
    """Train/eval variance ratio of z = W y, y = dropout(a), per output unit.

    With inverted dropout y_j = a_j m_j / p, m_j ~ Bernoulli(p) independent of a and of each other:
    E[y_j y_k] = E[a_j a_k] for j != k and E[y_j^2] = E[a_j^2] / p, so the mean of z is unchanged
    and

        Var_train(z_i) = Var_eval(z_i) + (1/p - 1) * sum_j W_ij^2 E[a_j^2].

    ``weight``: (out, in); ``second_moment``: E[a_j^2] per input unit; ``eval_var``: Var_eval(z_i)
    per output unit (must be > 0). With W = identity it is theory.dropout_variance_ratio.

    Reference: the same algebra as Li et al. (2019), Section 3, extended through a linear layer.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep probability must be in (0, 1], got {keep}")
    w = np.asarray(weight, dtype=np.float64)
    extra = (1.0 / keep - 1.0) * (w * w) @ np.asarray(second_moment, dtype=np.float64)
    v = np.asarray(eval_var, dtype=np.float64)
    if (v <= 0).any():
        raise ValueError("eval variance must be > 0 for a ratio")
    return 1.0 + extra / v


@dataclass(frozen=True)
class LayerShift:
    """One BN layer's input variance in training and eval mode, per unit (channel)."""

    layer: int
    name: str
    train_var: np.ndarray          # Var over samples of the BN input, dropout on
    eval_var: np.ndarray           # same, dropout off
    theory_ratio: np.ndarray | None  # closed form per unit, None where no closed form applies
    theory: str                    # which closed form, or why there is none

    @property
    def measured_ratio(self) -> np.ndarray:
        keep = self.eval_var > 0
        return self.train_var[keep] / self.eval_var[keep]

    @property
    def mean_ratio(self) -> float:
        """Mean over units of Var_train / Var_eval."""
        return float(np.mean(self.measured_ratio))

    @property
    def mean_theory(self) -> float | None:
        return None if self.theory_ratio is None else float(np.mean(self.theory_ratio[self.eval_var > 0]))


def _unit_moments(t: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-unit (axis 1) mean, population variance and second moment over every other axis."""
    dims = [0] + list(range(2, t.dim()))
    var, mean = torch.var_mean(t.double(), dim=dims, correction=0)
    return mean.numpy(), var.numpy(), (t.double() ** 2).mean(dim=dims).numpy()


def _keep(model: Net) -> float | None:
    drops = model.dropouts()
    return 1.0 - drops[0].p if drops and drops[0].p > 0 else None


@torch.no_grad()
def measure_variance_shift(model: Net, x: torch.Tensor, seed: int = 0) -> list[LayerShift]:
    """Every BN layer's input variance with dropout on (training mode) and off (eval mode).

    Runs on a copy, with fresh dropout masks from ``seed``; the caller's model is untouched. In
    training mode BN normalizes with the statistics of ``x`` as one batch (what a training step
    does, on a batch as large as the set) and its running statistics are not updated.
    """
    net = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    for d in net.dropouts():
        d.generator = gen
    keep = _keep(net)
    batchnorms = dict(net.batchnorms())
    taps = {}
    recorder = Recorder(net, net.recorded_layers(), any_mode=True)
    with preserved_norm_state(net):
        for mode in ("eval", "train"):
            net.train(mode == "train")
            recorder.arm()
            net(x)
            taps[mode] = recorder.tensors()
            recorder.disarm()
    out = []
    for i in batchnorms:
        train_in, eval_in = taps["train"][i]["norm_input"], taps["eval"][i]["norm_input"]
        c, v, _ = _unit_moments(eval_in)
        _, v_train, _ = _unit_moments(train_in)
        ratio, how = _theory(net, i, taps["eval"], c, v, keep)
        out.append(LayerShift(layer=i, name=net.layer_names[i], train_var=v_train, eval_var=v, theory_ratio=ratio,
                              theory=how))
    return out


def _theory(net: Net, i: int, eval_taps: list[dict[str, torch.Tensor]], c: np.ndarray, v: np.ndarray,
            keep: float | None) -> tuple[np.ndarray | None, str]:
    block = net.blocks[i]
    safe_v = np.where(v > 0, v, np.nan)
    order = block.order
    upstream = any(b.dropout is not None for b in net.blocks[:i]) or (
        "dropout" in order and order.index("dropout") < order.index("norm"))
    if keep is None or not upstream:
        return np.ones_like(v), "no dropout before this BN: ratio 1"
    if "dropout" in order and order.index("dropout") == order.index("norm") - 1:
        # A unit that never varies (a dead ReLU) has no ratio: NaN there, the closed form elsewhere.
        ratio = np.full(np.shape(v), np.nan)
        alive = v > 0
        ratio[alive] = theory.dropout_variance_ratio(np.broadcast_to(c, np.shape(v))[alive], v[alive], keep)
        return ratio, "dropout right before BN: ((c^2+v)/p - c^2)/v"
    if order.index("norm") == 0 and i > 0:
        prev = net.blocks[i - 1]
        feeds_directly = prev.order and prev.order[-1] == "dropout" and prev.pool is None
        if feeds_directly and isinstance(block.weight, nn.Linear):
            _, _, second = _unit_moments(eval_taps[i - 1]["output"])
            w = block.weight.weight.detach().double().numpy()
            return linear_after_dropout_ratio(w, second, safe_v, keep), \
                "dropout, Linear, BN: 1 + (1/p - 1) sum_j W_ij^2 E[a_j^2] / v"
        if feeds_directly:
            return None, "no closed form here (a convolution between dropout and BN)"
        if prev.order and prev.order[-1] == "dropout":
            return None, "no closed form (max-pooling between dropout and BN)"
    return None, "no closed form (dropout further upstream)"


@dataclass(frozen=True)
class StatisticsFix:
    """Eval-mode test numbers with BN's running statistics, and after recomputing them."""

    acc_running: float
    acc_recomputed: float
    loss_running: float
    loss_recomputed: float


@torch.no_grad()
def recomputed_statistics_accuracy(model: Net, x_train: torch.Tensor, x_test: torch.Tensor,
                                   y_test: torch.Tensor) -> StatisticsFix:
    """Eval accuracy and loss before and after replacing every BN layer's running statistics by
    the population statistics of ``x_train`` computed with dropout off (train.population_statistics:
    BN layers normalize with those statistics, all dropout modules are in eval mode)."""
    net = copy.deepcopy(model)
    net.eval()
    logits = net(x_test)
    stats = population_statistics(net, x_train)
    acc_fixed = accuracy_with_stats(net, x_test, y_test, stats)
    with preserved_norm_state(net):
        net.eval()
        for i, m in net.batchnorms():
            m.running_mean.copy_(stats[i][0])
            m.running_var.copy_(stats[i][1])
        loss_fixed = loss_fn(net(x_test), y_test).item()
    return StatisticsFix(acc_running=accuracy(logits, y_test), acc_recomputed=acc_fixed,
                         loss_running=loss_fn(logits, y_test).item(), loss_recomputed=loss_fixed)
