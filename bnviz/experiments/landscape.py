"""How smooth the loss is along the gradient during training, after Santurkar et al. (2018).

Santurkar, Tsipras, Ilyas & Madry, "How Does Batch Normalization Help Optimization?" (NeurIPS
2018) argue that BN helps because it makes the loss landscape smoother, not because it reduces
"internal covariate shift". Their Figure 4 measures, at points along a training run, what happens
when one moves from the current weights ``w`` along the negative gradient ``g = grad L(w)`` by step
sizes ``eta``, on the same mini-batch:

* **loss landscape**: the values ``L(w - eta g)``; a narrow range means one step's outcome
  is predictable whatever the step size;
* **gradient predictiveness**: ``||grad L(w) - grad L(w - eta g)||``; small means the gradient
  at the next point is close to the one we stepped along;
* **effective beta-smoothness**: ``max_eta ||grad L(w) - grad L(w - eta g)|| / ||eta g||``, the
  largest change of gradient per unit of distance moved (a local Lipschitz constant of the
  gradient in that direction).

Why our own training loop (:func:`bnviz.train.train_steps`): the probes need the weights at
intermediate steps, which :func:`bnviz.train.train` keeps to itself (its callback sees only the
History). The loop reproduces ``train``'s trajectory exactly, and every probe runs on a deep copy,
so measuring never changes the run. The model stays in training mode, as in a training step:
BN normalizes by the statistics of the probed batch.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..data import Dataset
from ..train import Curves, LoopProgress, train_steps
from ..models import Net, loss_fn

# Step sizes as multiples of the learning rate: around one SGD step (eta = lr), as in Santurkar et
# al., who probe steps of the order of the training step.
DEFAULT_STEP_MULTIPLES = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
DEFAULT_PROBES = 15


@dataclass(frozen=True)
class Probe:
    """The landscape along the gradient at one point of training."""

    step: int                  # updates done before the probe
    etas: np.ndarray           # step sizes (absolute)
    loss0: float               # L(w)
    losses: np.ndarray         # L(w - eta g), one per eta
    grad_norm: float           # ||g||
    grad_diffs: np.ndarray     # ||g - grad L(w - eta g)||, one per eta

    @property
    def loss_range(self) -> float:
        """max - min of the loss over {w} and the points w - eta g."""
        values = np.append(self.losses, self.loss0)
        return float(np.max(values) - np.min(values))

    @property
    def max_grad_diff(self) -> float:
        """Gradient predictiveness: the largest ||g - grad L(w - eta g)|| over the step sizes."""
        return float(np.max(self.grad_diffs))

    @property
    def beta(self) -> float:
        """Effective beta-smoothness: max over eta of ||grad difference|| / ||eta g||."""
        if self.grad_norm == 0:
            return math.nan
        return float(np.max(self.grad_diffs / (self.etas * self.grad_norm)))


def _flat_grad(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def probe(model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor], etas: Sequence[float],
          step: int = 0) -> Probe:
    """Measure the loss and its gradient at ``w`` and at ``w - eta g`` for every ``eta``.

    ``loss_of(m)`` computes the loss of module ``m`` (e.g. on a fixed batch). ``model`` is not
    changed: the steps are taken on a deep copy. Everything is computed in float64 on the copy,
    so differences of gradients are not swamped by float32 rounding.
    """
    base = copy.deepcopy(model).double()
    loss = loss_of(base)
    g = _flat_grad(base, loss).detach()
    params = [p for p in base.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    losses, diffs = [], []
    for eta in etas:
        moved = copy.deepcopy(base)
        with torch.no_grad():
            offset = 0
            for p, p0 in zip([p for p in moved.parameters() if p.requires_grad], start):
                n = p.numel()
                p.copy_(p0 - eta * g[offset:offset + n].view_as(p))
                offset += n
        moved_loss = loss_of(moved)
        losses.append(moved_loss.item())
        diffs.append(torch.linalg.vector_norm(g - _flat_grad(moved, moved_loss)).item())
    return Probe(step=step, etas=np.asarray(etas, dtype=np.float64), loss0=loss.item(),
                 losses=np.asarray(losses), grad_norm=torch.linalg.vector_norm(g).item(),
                 grad_diffs=np.asarray(diffs))


@dataclass(frozen=True)
class LandscapeRun:
    """A training run with landscape probes at evenly spaced steps."""

    config: Config
    curves: Curves
    probes: list[Probe]

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of a Probe property ("loss_range", "max_grad_diff", "beta")."""
        return (np.asarray([p.step for p in self.probes]),
                np.asarray([getattr(p, name) for p in self.probes], dtype=np.float64))


def probe_steps(steps: int, n_probes: int) -> list[int]:
    """``n_probes`` step indices spread evenly over ``[0, steps - 1]`` (fewer if steps is small)."""
    return sorted({int(round(s)) for s in np.linspace(0, max(steps - 1, 0), max(n_probes, 1))})


def train_with_probes(config: Config, *, step_multiples: Sequence[float] = DEFAULT_STEP_MULTIPLES,
                      n_probes: int = DEFAULT_PROBES, progress: LoopProgress | None = None,
                      dataset: Dataset | None = None) -> LandscapeRun:
    """Train ``config`` and probe the landscape at ``n_probes`` steps, with step sizes
    ``eta = multiple * config.lr`` along the gradient of that step's own mini-batch."""
    at = set(probe_steps(config.steps, n_probes))
    etas = [m * config.lr for m in step_multiples]
    probes: list[Probe] = []

    def on_step(step: int, model: Net, xb: torch.Tensor, yb: torch.Tensor) -> None:
        if step in at:
            x64 = xb.double()
            probes.append(probe(model, lambda m: loss_fn(m(x64), yb), etas, step))

    curves, _ = train_steps(config, on_step=on_step, progress=progress, dataset=dataset)
    return LandscapeRun(config=config, curves=curves, probes=probes)
