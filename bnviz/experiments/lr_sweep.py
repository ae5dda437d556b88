"""Learning-rate sweep: the largest learning rate a network trains with, with and without BN.

BN's best-known practical effect (Ioffe & Szegedy 2015, section 3.3; Santurkar et al. 2018,
Figure 1) is that it tolerates much larger learning rates. The sweep trains the same network,
from the same initial weights on the same batches, at every learning rate of a grid, and
reports for each how training ended.

A rate counts as **stable** when training never produced a NaN/inf loss and the mean training
loss over the last 10% of the steps is below half the loss of the very first step (the network
learned something: a run that merely drifts from 2.5 to 2.1, near chance for 10 classes, did not).
**Diverged** means the loss became NaN/inf; a run that neither diverged nor improved is unstable
too (the loss bounced or stayed up).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from ..config import Config
from ..data import Dataset, load
from ..train import train_steps

DEFAULT_LRS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
TAIL = 0.1          # fraction of the final steps averaged for the "final loss"
IMPROVEMENT = 0.5   # a stable run ends below this fraction of its first loss

# (runs done, runs in total, text naming the next run, e.g. "lr 0.3 with BN")
SweepProgress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class SweepPoint:
    label: str                 # "with BN" / "without BN"
    lr: float
    initial_loss: float        # training loss of the first step
    final_loss: float          # mean training loss over the last 10% of steps; NaN if diverged
    test_acc: float            # eval-mode test accuracy at the end; NaN if diverged
    diverged_at: int | None    # step whose loss was NaN/inf

    @property
    def stable(self) -> bool:
        return (self.diverged_at is None and math.isfinite(self.final_loss)
                and self.final_loss < IMPROVEMENT * self.initial_loss)


def jobs(config: Config, lrs: Sequence[float] = DEFAULT_LRS) -> list[tuple[str, Config]]:
    """(label, config) of every run of the sweep: ``config`` with and without its normalization at
    every learning rate in ``lrs``, evaluated once, at the end."""
    variants = {"with BN": config, "without BN": config.without_norm()} if config.has_norm else {"without BN": config}
    return [(label, cfg.replace(lr=float(lr), eval_every=cfg.steps)) for label, cfg in variants.items() for lr in lrs]


def point(label: str, config: Config, report: object = None, dataset: Dataset | None = None) -> SweepPoint:
    """Train one run of the sweep and say how it ended (``report``: the executor's, unused)."""
    curves, _ = train_steps(config, dataset=dataset)
    diverged = curves.diverged_at is not None
    return SweepPoint(label=label, lr=config.lr, initial_loss=curves.initial_loss,
                      final_loss=curves.final_loss(TAIL),
                      test_acc=math.nan if diverged else float(curves.test_acc[-1]),
                      diverged_at=curves.diverged_at)


def sweep(config: Config, lrs: Sequence[float] = DEFAULT_LRS, *, progress: SweepProgress | None = None,
          dataset: Dataset | None = None) -> list[SweepPoint]:
    """Train ``config`` with and without its normalization at every learning rate in ``lrs``, one
    run after another (the app runs :func:`point` of each of :func:`jobs` side by side instead)."""
    data = dataset if dataset is not None else load(config)
    todo = jobs(config, lrs)
    points = []
    for i, (label, cfg) in enumerate(todo):
        if progress is not None:
            progress(i, len(todo), f"lr {cfg.lr:g} {label}")
        points.append(point(label, cfg, dataset=data))
    if progress is not None:
        progress(len(todo), len(todo), "done")
    return points


def largest_stable(points: Sequence[SweepPoint], label: str) -> float | None:
    """The largest stable learning rate of ``label``'s runs, or None if none was stable."""
    stable = [p.lr for p in points if p.label == label and p.stable]
    return max(stable) if stable else None
