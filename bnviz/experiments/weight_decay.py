r"""Scale invariance and weight decay: what L2 regularization does to weights that feed BatchNorm.

A weight matrix W followed by BN (``Linear -> BN``, without bias) is *scale invariant*: BN removes
any positive factor, so the loss satisfies L(kW) = L(W) for k > 0. Differentiating,

.. math::

    \nabla L(kW) = \tfrac{1}{k} \nabla L(W), \qquad \langle W, \nabla L(W) \rangle = 0 .

Two consequences (van Laarhoven 2017, "L2 Regularization versus Batch and Weight Normalization";
Zhang, Wang, Xu & Grosse 2019, "Three Mechanisms of Weight Decay Regularization"):

* plain SGD only *grows* such weights: with the gradient orthogonal to W,
  :math:`\lVert W_{t+1} \rVert^2 = \lVert W_t \rVert^2 + \eta^2 \lVert g_t \rVert^2`;
  with weight decay :math:`\lambda`, :math:`W_{t+1} = (1 - \eta\lambda) W_t - \eta g_t` and
  :math:`\lVert W_{t+1} \rVert^2 = (1 - \eta\lambda)^2 \lVert W_t \rVert^2 + \eta^2 \lVert g_t \rVert^2`;
* what the network computes depends on the direction :math:`W / \lVert W \rVert` only, and an
  SGD step moves that direction by about :math:`\eta \lVert g \rVert / \lVert W \rVert`, with
  :math:`\lVert g \rVert \propto 1 / \lVert W \rVert`: an *effective learning rate*
  :math:`\eta / \lVert W \rVert^2`. Weight decay does not regularize these weights (their scale
  is invisible to the loss); it keeps their norm small and the effective learning rate high.

BN's eps breaks the invariance slightly (var + eps is not var scaled); with eps = 1e-5 against
pre-activation variances of order 0.1 to 10 the effect is below 1e-4 relative.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, check
from ..data import Dataset, load
from ..models import Net
from ..norms import is_batchnorm
from ..train import Callback, build_for, run_loop
from .small_batch import EvalCurve

Report = Callable[[int, int, str], None]


def scale_invariant_weights(model: Net) -> list[tuple[str, nn.Parameter]]:
    """(layer name, weight) of every hidden weight layer whose output goes straight into a
    BatchNorm: a Linear or Conv2d without bias whose block applies BN first (BN before the
    activation). Other weights (the classifier, layers with BN after the activation) are not
    scale invariant."""
    out = []
    for name, block in zip(model.layer_names, model.blocks):
        if block.norm is None or not is_batchnorm(block.norm) or not block.order or block.order[0] != "norm":
            continue
        layers = [m for m in block.weight.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if len(layers) == 1 and layers[0].bias is None:
            out.append((name, layers[0].weight))
    return out


class WeightNorms(Callback):
    """||W|| of each scale-invariant weight before the first update and after every update, and
    the norm of each step's loss gradient (weight decay not included)."""

    def __init__(self, weights: list[tuple[str, nn.Parameter]]):
        self.weights = weights
        self.norms = [[float(w.detach().norm()) for _, w in weights]]
        self.grad_norms: list[list[float]] = []

    def after_step(self, step, model, loss):
        self.grad_norms.append([float(w.grad.norm()) if w.grad is not None else 0.0 for _, w in self.weights])
        self.norms.append([float(w.detach().norm()) for _, w in self.weights])


@dataclass(frozen=True)
class NormRun:
    """One run's weight norms: ``norms[t, l]`` = ||W_l|| after t updates (t = 0 .. steps),
    ``grad_norms[t, l]`` = ||dL/dW_l|| at step t."""

    weight_decay: float
    lr: float
    layers: list[str]
    norms: np.ndarray
    grad_norms: np.ndarray
    eval_steps: np.ndarray
    test_acc: np.ndarray
    diverged_at: int | None

    @property
    def effective_lr(self) -> np.ndarray:
        """lr / ||W||^2 per step and layer (the learning rate of the direction W / ||W||)."""
        return self.lr / self.norms ** 2

    @property
    def label(self) -> str:
        return "no weight decay" if self.weight_decay == 0 else f"weight decay {self.weight_decay:g}"


def train_norms(config: Config, *, data: Dataset | None = None,
                progress: Callable[[int], None] | None = None) -> NormRun:
    """Train ``config`` (its ``weight_decay``) and record the scale-invariant weights' norms."""
    check(config)
    data = data if data is not None else load(config)
    model, optimizer, stream = build_for(config, data)
    weights = scale_invariant_weights(model)
    norms = WeightNorms(weights)
    curve = EvalCurve(data, config.eval_every, config.steps, progress)
    curve.evaluate(model, 0)
    end = run_loop(model, optimizer, stream, config.steps, [norms, curve])
    return NormRun(weight_decay=config.weight_decay, lr=config.lr, layers=[n for n, _ in weights],
                   norms=np.asarray(norms.norms).reshape(-1, len(weights)),
                   grad_norms=np.asarray(norms.grad_norms).reshape(-1, len(weights)),
                   eval_steps=np.asarray(curve.eval_steps), test_acc=np.asarray(curve.test_acc),
                   diverged_at=end.diverged_at)


def compare(config: Config, weight_decay: float, progress: Report | None = None) -> list[NormRun]:
    """The same run (seed, batches) without and with ``weight_decay``."""
    data = load(config)
    out = []
    for i, wd in enumerate((0.0, weight_decay)):
        def step(n: int, i=i, wd=wd) -> None:
            if progress is not None:
                progress(i * config.steps + n, 2 * config.steps, f"weight decay {wd:g}: step {n}/{config.steps}")
        out.append(train_norms(config.replace(weight_decay=wd), data=data, progress=step))
    return out


@dataclass(frozen=True)
class ScaleCheck:
    """The "x k weights" check on one batch, BN in training mode (batch statistics)."""

    factor: float
    layer: str
    max_output_change: float      # max |logits(k W) - logits(W)|
    max_logit: float              # max |logits(W)|, for scale
    grad_norm: float              # ||dL/dW||
    grad_norm_scaled: float       # ||dL/d(kW)||
    max_grad_error: float         # max |k * dL/d(kW) - dL/dW| / max |dL/dW|

    @property
    def grad_ratio(self) -> float:
        return self.grad_norm_scaled / self.grad_norm


def scale_check(model: Net, x: torch.Tensor, y: torch.Tensor, factor: float = 10.0, layer: int = 0) -> ScaleCheck:
    """Multiply the ``layer``-th scale-invariant weight of a copy of ``model`` by ``factor`` and
    compare one training-mode forward and backward pass with the original's (both by autograd,
    in float64). Raises ValueError when the model has no such weight."""
    weights = scale_invariant_weights(model)
    if not weights:
        raise ValueError("this network has no weight layer followed directly by BatchNorm")
    name = weights[layer][0]
    results = []
    for k in (1.0, factor):
        net = copy.deepcopy(model).double()
        net.train()
        w = dict(scale_invariant_weights(net))[name]
        with torch.no_grad():
            w.mul_(k)
        logits = net(x.double())
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), w)
        results.append((logits.detach(), grad))
    (out1, g1), (outk, gk) = results
    return ScaleCheck(factor=factor, layer=name, max_output_change=float((outk - out1).abs().max()),
                      max_logit=float(out1.abs().max()), grad_norm=float(g1.norm()), grad_norm_scaled=float(gk.norm()),
                      max_grad_error=float((gk * factor - g1).abs().max() / g1.abs().max()))

