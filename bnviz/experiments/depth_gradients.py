"""Gradient norm per layer at initialization, for deep MLPs with and without BatchNorm and skips.

Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz (2019), *A Mean Field Theory of Batch
Normalization*: a deep fully connected network with BatchNorm and no skip connections has
*exploding* gradients at initialization, whatever the weight scale (BN removes it). Going from the
output back to the input, each Linear-BN-ReLU layer multiplies the squared gradient norm by about
pi / (pi - 1) for large batches, so

    ||dL/dW_l|| ~ ||dL/dW_L|| * lambda ** (L - l),   lambda = sqrt(pi / (pi - 1)) = 1.211.

``tests/test_depth_gradients.py`` checks that rate by Monte-Carlo over wide networks before the
figure draws it. Skip connections tame it (``x + ReLU(BN(W x))``), and a He-initialized ReLU
network without BN keeps its gradient norms roughly level. A few steps of training change the
picture: BN makes the loss independent of the scale of the weights before it, so the exploding
gradients first inflate the early layers' weights, and a larger weight receives a smaller gradient
(the gradient scales as 1 / ||W||).

The networks: a first Linear from the inputs to ``width`` units, then ``depth - 1`` Linear layers of
``width`` to ``width``; each Linear is followed by BN (without bias before it) and ReLU, or by ReLU
alone; with skips every layer after the first adds its input: ``x + ReLU(BN(W x))``. He initialization
(``kaiming_normal_``, fan-in), biases 0; a Linear classifier at the end (weights N(0, 1/width)). They are bnviz networks
(:class:`bnviz.models.Net` of :class:`bnviz.models.Block` s), trained by the one loop
(:func:`bnviz.train.train_steps`); a callback reads every weight's gradient after each backward pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..data import load
from ..models import Block, Net
from ..train import Callback, Curves, train_steps

KINDS = {"bn": "BN-ReLU, no skips", "bn_skip": "BN-ReLU with skips", "plain": "ReLU without BN"}
GROWTH = math.sqrt(math.pi / (math.pi - 1))   # Yang et al.'s per-layer gradient growth, ReLU, large batch


class SkipNet(Net):
    """A :class:`Net` whose blocks after the first add their input: ``x + block(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten_input:
            x = x.flatten(1)
        x = self.blocks[0](x)
        for block in self.blocks[1:]:
            x = x + block(x)
        return self.head(x)


def deep_mlp(kind: str, depth: int, in_features: int, width: int, n_classes: int,
             generator: torch.Generator) -> Net:
    """The network ``kind`` (a key of :data:`KINDS`) with ``depth`` Linear layers (see the module
    docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown network {kind!r}; choose one of {', '.join(KINDS)}")
    if depth < 1:
        raise ValueError("depth must be at least 1")
    bn = kind != "plain"
    blocks = []
    for i in range(depth):
        linear = nn.Linear(in_features if i == 0 else width, width, bias=not bn)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu", generator=generator)
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)
        blocks.append(Block(linear, nn.BatchNorm1d(width) if bn else None, nn.ReLU(), None, ("norm", "act")))
    head = nn.Linear(width, n_classes)
    nn.init.normal_(head.weight, std=width ** -0.5, generator=generator)
    nn.init.zeros_(head.bias)
    cls = SkipNet if kind == "bn_skip" else Net
    return cls(blocks, head, [f"layer {i + 1}" for i in range(depth)], flatten_input=True)


def block_weights(model: Net) -> list[torch.Tensor]:
    """Every block's weight matrix W_l, l = 1 .. depth."""
    return [b.weight.weight for b in model.blocks]


class GradientNorms(Callback):
    """After each update, the gradient norms of that step's batch at the weights before it:
    ``||dL/dW||_F`` of each tensor ``weights(model)`` lists."""

    def __init__(self, weights: Callable[[nn.Module], list[torch.Tensor]] = block_weights) -> None:
        self.weights = weights
        self.norms: list[np.ndarray] = []

    def after_step(self, step, model, loss):
        with torch.no_grad():
            self.norms.append(np.array([w.grad.norm().item() for w in self.weights(model)]))


@dataclass(frozen=True)
class GradientRun:
    """One network trained ``len(norms)`` steps: ``norms[s]`` are the per-layer gradient norms at
    step s (s = 0: initialization), shape (steps, depth)."""

    label: str
    norms: np.ndarray
    curves: Curves

    def at(self, step: int) -> np.ndarray | None:
        return self.norms[step] if step < len(self.norms) else None

    def growth(self) -> np.ndarray:
        """Per step: ||dL/dW_1|| / ||dL/dW_L||, how much larger the first layer's gradient is."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.norms[:, 0] / self.norms[:, -1]


def fitted_growth(norms: np.ndarray, skip_ends: int = 3) -> float:
    """The per-layer factor lambda of a geometric fit ``norm_l ~ c * lambda ** (L - l)``, by least
    squares on log norms, leaving out ``skip_ends`` layers at each end (the first layer has another
    fan-in, the last sits next to the classifier)."""
    inner = norms[skip_ends:len(norms) - skip_ends] if len(norms) > 2 * skip_ends + 2 else norms
    layers = np.arange(len(inner))
    slope = np.polyfit(layers, np.log(inner), 1)[0]
    return float(np.exp(-slope))


def train_kind(config: Config, kind: str, depth: int, progress: Callable[[int, int], None] | None = None
               ) -> GradientRun:
    """Train network ``kind`` with ``config``'s data, optimizer, lr, batches and steps, reading
    the gradient norms at every step."""
    data = load(config)
    model = deep_mlp(kind, depth, data.n_features, config.width, data.n_classes,
                     torch.Generator().manual_seed(config.seed))
    reading = GradientNorms()
    curves, _ = train_steps(config, dataset=data, model=model, callbacks=[reading], progress=progress)
    return GradientRun(label=KINDS[kind], norms=np.array(reading.norms), curves=curves)


def at_init(config: Config, depth: int) -> dict[str, GradientRun]:
    """Each network's gradient norms at initialization: step 0 of :func:`train_all` (one step of
    the same run), without the rest of the training."""
    return {KINDS[kind]: train_kind(config.replace(steps=1, eval_every=1), kind, depth) for kind in KINDS}


def train_all(config: Config, depth: int, progress: Callable[[int, int, str], None] | None = None
              ) -> dict[str, GradientRun]:
    """The three networks of :data:`KINDS`, one seed, the same batches."""
    out = {}
    for i, kind in enumerate(KINDS):
        def report(done: int, total: int, i=i, kind=kind) -> None:
            if progress is not None:
                progress(i * total + done, len(KINDS) * total, f"{KINDS[kind]}: step {done}/{total}")
        run = train_kind(config, kind, depth, report)
        out[run.label] = run
    return out
