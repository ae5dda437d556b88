"""A bare training loop that shows the model to a callback at every step.

:func:`bnviz.train.train` is the loop every page uses; it records histograms and hands its progress
callback only the History, never the model, and it builds its model itself. Two experiments need
more: the loss-landscape probes (:mod:`bnviz.landscape`) look at the weights *between* updates, and
noisy BatchNorm (:mod:`bnviz.noisy_bn`) changes the model before training starts. This loop gives
both hooks and nothing else: no snapshots, only the loss of every step and the test accuracy.

It follows ``train`` exactly (same model initialization, same batches, same optimizer), so with no
hooks its per-step losses are those of ``train(config)``, bit for bit; ``tests/test_landscape.py``
checks it. The experiments therefore describe the very runs the other pages show.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .config import Config, check
from .data import Dataset, load
from .models import Net, accuracy, build, loss_fn
from .train import _endless_batches, make_optimizer

# Called before the update of step ``step`` with the model (weights after ``step`` updates, train
# mode) and that step's batch. It must not change the model: work on a copy.
StepFn = Callable[[int, Net, torch.Tensor, torch.Tensor], None]
# (updates done, total steps); called every ``config.eval_every`` updates and at the end.
LoopProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class Curves:
    """What one run of :func:`train_steps` records."""

    loss: np.ndarray          # training cross-entropy of step i's batch (train mode), one per update
    batch_acc: np.ndarray     # accuracy on that batch
    eval_steps: np.ndarray    # updates done at each evaluation (0 first)
    test_acc: np.ndarray      # eval-mode accuracy on the test split (BN with running statistics)
    test_loss: np.ndarray     # eval-mode cross-entropy on the test split
    diverged_at: int | None   # step whose loss was NaN/inf (training stopped there)

    @property
    def initial_loss(self) -> float:
        return float(self.loss[0]) if len(self.loss) else math.nan

    def final_loss(self, fraction: float = 0.1) -> float:
        """Mean training loss over the last ``fraction`` of the steps (NaN if the run diverged)."""
        if self.diverged_at is not None or not len(self.loss):
            return math.nan
        tail = max(1, int(round(len(self.loss) * fraction)))
        return float(np.mean(self.loss[-tail:]))


@torch.no_grad()
def _test(model: Net, data: Dataset) -> tuple[float, float]:
    model.eval()
    logits = model(data.x_test)
    model.train()
    return accuracy(logits, data.y_test), loss_fn(logits, data.y_test).item()


def train_steps(config: Config, *, prepare: Callable[[Net], None] | None = None, on_step: StepFn | None = None,
                progress: LoopProgress | None = None, dataset: Dataset | None = None) -> tuple[Curves, Net]:
    """Train as :func:`bnviz.train.train` does, calling ``prepare(model)`` once before the first
    step and ``on_step(step, model, x, y)`` before every update. Returns the curves and the final
    model (eval mode).

    A NaN/inf loss stops training (``Curves.diverged_at``), as in ``train``.
    """
    check(config)
    data = dataset if dataset is not None else load(config)
    model = build(config, tuple(data.x_train.shape[1:]), data.n_classes,
                  torch.Generator().manual_seed(config.seed))
    if prepare is not None:
        prepare(model)
    optimizer = make_optimizer(config, model)
    stream = _endless_batches(data, config.batch_size, torch.Generator().manual_seed(config.seed + 1))
    losses: list[float] = []
    batch_acc: list[float] = []
    acc0, loss0 = _test(model, data)
    eval_steps, test_acc, test_loss = [0], [acc0], [loss0]
    diverged_at = None
    model.train()
    for step in range(config.steps):
        xb, yb = next(stream)
        if on_step is not None:
            on_step(step, model, xb, yb)
        logits = model(xb)
        loss = loss_fn(logits, yb)
        value = loss.item()
        if not math.isfinite(value):
            diverged_at = step
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(value)
        batch_acc.append(accuracy(logits, yb))
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            acc, tl = _test(model, data)
            eval_steps.append(done)
            test_acc.append(acc)
            test_loss.append(tl)
            if progress is not None:
                progress(done, config.steps)
    model.eval()
    curves = Curves(loss=np.asarray(losses), batch_acc=np.asarray(batch_acc), eval_steps=np.asarray(eval_steps),
                    test_acc=np.asarray(test_acc), test_loss=np.asarray(test_loss), diverged_at=diverged_at)
    return curves, model
