"""Small-batch remedies against BatchNorm: Batch Renorm, Ghost BN and GroupNorm + Weight
Standardization, on the batch-size sweep and on batches that are not i.i.d.

The same network (seed, width, depth, steps, learning rate) is trained with each normalization
(:data:`REMEDIES`) at several batch sizes, and once with *two-class batches*: every batch holds
samples of two classes drawn at random, half of each, the way a data loader that does not shuffle
across classes (or a stream sorted by class, or one patient per batch) feeds a network. BN then
normalizes by statistics no test batch and no running average resembles; the per-sample GroupNorm
does not care; Batch Renorm pulls training towards the running statistics eval mode uses.

Every run goes through :func:`bnviz.train.run_loop`; the layers are built from the config's
BN (or GroupNorm) network with its normalization modules swapped, before the optimizer is made.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..config import Config, check
from ..data import Dataset, batches, load
from ..models import Net, accuracy, build
from ..small_batch_norms import BatchRenorm, GhostBatchNorm, RenormSchedule, WSConv2d, WSLinear
from ..train import Callback, make_optimizer, run_loop

REMEDIES = ("batchnorm", "renorm", "ghost", "gn_ws")
LABELS = {"batchnorm": "BatchNorm", "renorm": "Batch Renorm", "ghost": "Ghost BN", "gn_ws": "GroupNorm + WS"}
SAMPLINGS = ("iid", "two-class")
DEFAULT_BATCH_SIZES = (2, 4, 8, 32)

# (done, total, text)
Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Remedy:
    """One normalization and its knobs: Ghost BN's ghost-batch size, Batch Renorm's final limits
    (relaxed after a warm-up of a sixth of the steps over a third of them)."""

    kind: str
    ghost_size: int = 4
    r_max: float = 3.0
    d_max: float = 5.0

    @property
    def label(self) -> str:
        if self.kind == "ghost":
            return f"{LABELS[self.kind]} (ghost batch {self.ghost_size})"
        return LABELS[self.kind]

    def schedule(self, steps: int) -> RenormSchedule:
        return RenormSchedule(r_max=self.r_max, d_max=self.d_max, warmup=steps // 6, ramp=max(steps // 3, 1))


def _standardized(layer: nn.Module) -> nn.Module:
    """A Linear or Conv2d as its Weight-Standardized twin holding the same parameters."""
    if type(layer) is nn.Linear:
        ws = WSLinear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    elif type(layer) is nn.Conv2d:
        ws = WSConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                      bias=layer.bias is not None)
    else:
        for name, child in layer.named_children():
            layer.add_module(name, _standardized(child))
        return layer
    ws.weight = layer.weight
    ws.bias = layer.bias
    return ws


def build_remedy(config: Config, remedy: Remedy, data: Dataset) -> Net:
    """The network ``config`` describes, with ``remedy``'s normalization in every hidden block:
    the config's BN network with each BN swapped (same initial weights), or for GN + WS its
    GroupNorm network with every hidden weight layer standardized."""
    base = config.replace(norm="groupnorm" if remedy.kind == "gn_ws" else "batchnorm")
    model = build(base, tuple(data.x_train.shape[1:]), data.n_classes, torch.Generator().manual_seed(config.seed))
    for block in model.blocks:
        bn = block.norm
        if remedy.kind == "renorm":
            block.norm = BatchRenorm(bn.num_features, bn.eps, bn.momentum, schedule=remedy.schedule(config.steps))
        elif remedy.kind == "ghost":
            block.norm = GhostBatchNorm(bn.num_features, remedy.ghost_size, bn.eps, bn.momentum)
        elif remedy.kind == "gn_ws":
            block.weight = _standardized(block.weight)
    return model


def two_class_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int,
                      generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches of two classes each: two distinct classes drawn at random, then
    ``batch_size // 2`` samples of the first and the rest of the second, without replacement
    within the batch, in random order (so Ghost BN's consecutive ghost batches mix the two)."""
    classes = torch.unique(y)
    members = [torch.nonzero(y == c).flatten() for c in classes]
    while True:
        pair = torch.randperm(len(classes), generator=generator)[:2]
        counts = (batch_size // 2, batch_size - batch_size // 2)
        index = torch.cat([members[int(c)][torch.randperm(len(members[int(c)]), generator=generator)[:k]]
                           for c, k in zip(pair, counts)])
        index = index[torch.randperm(len(index), generator=generator)]
        yield x[index], y[index]


def _iid_batches(data: Dataset, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from batches(data.x_train, data.y_train, batch_size, generator)


class EvalCurve(Callback):
    """Eval-mode test accuracy every ``every`` updates and after the last (the model goes back to
    training mode after each), and the training loss of every step."""

    def __init__(self, data: Dataset, every: int, steps: int, progress: Callable[[int], None] | None = None):
        self.data, self.every, self.steps, self.progress = data, every, steps, progress
        self.eval_steps: list[int] = []
        self.test_acc: list[float] = []
        self.losses: list[float] = []

    def evaluate(self, model: nn.Module, done: int) -> None:
        model.eval()
        with torch.no_grad():
            self.test_acc.append(accuracy(model(self.data.x_test), self.data.y_test))
        self.eval_steps.append(done)
        model.train()

    def after_forward(self, step, logits, loss, y):
        self.losses.append(loss)

    def after_step(self, step, model, loss):
        done = step + 1
        if done % self.every == 0 or done == self.steps:
            self.evaluate(model, done)
            if self.progress is not None:
                self.progress(done)


class RenormFactors(Callback):
    """The first Batch Renorm layer's r and d after every training forward pass, and the limits of
    that step (read from the layer: it only reads, never changes it)."""

    def __init__(self, layer: BatchRenorm):
        self.layer = layer
        self.r: list[np.ndarray] = []
        self.d: list[np.ndarray] = []
        self.limits: list[tuple[float, float]] = []

    def before_step(self, step, model, x, y):
        self.limits.append(self.layer.schedule.limits(int(self.layer.num_batches_tracked)))

    def after_forward(self, step, logits, loss, y):
        self.r.append(self.layer.last_r.numpy().copy())
        self.d.append(self.layer.last_d.numpy().copy())


@dataclass(frozen=True)
class RemedyRun:
    remedy: str                  # Remedy.kind
    label: str
    batch_size: int
    sampling: str                # "iid" or "two-class"
    eval_steps: np.ndarray
    test_acc: np.ndarray         # eval mode (BN variants: running statistics), at eval_steps
    losses: np.ndarray           # training cross-entropy of every step's batch
    diverged_at: int | None
    # Batch Renorm only: the first layer's r and d at every step, (steps, C) each, and the limits
    # (r_max, d_max) they were clipped to, (steps, 2).
    renorm_r: np.ndarray | None = None
    renorm_d: np.ndarray | None = None
    renorm_limits: np.ndarray | None = None

    @property
    def final_acc(self) -> float:
        return float(self.test_acc[-1]) if len(self.test_acc) else float("nan")


def train_remedy(config: Config, remedy: Remedy, sampling: str = "iid", *, data: Dataset | None = None,
                 progress: Callable[[int], None] | None = None) -> RemedyRun:
    """Train ``config``'s network with ``remedy`` on i.i.d. or two-class batches of
    ``config.batch_size`` (seeded by ``config.seed`` + 1, as every bnviz run)."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    check(config.replace(norm="batchnorm"))
    data = data if data is not None else load(config)
    model = build_remedy(config, remedy, data)
    optimizer = make_optimizer(config, model)
    generator = torch.Generator().manual_seed(config.seed + 1)
    stream = (two_class_batches(data.x_train, data.y_train, config.batch_size, generator) if sampling == "two-class"
              else _iid_batches(data, config.batch_size, generator))
    curve = EvalCurve(data, config.eval_every, config.steps, progress)
    curve.evaluate(model, 0)
    factors = RenormFactors(model.blocks[0].norm) if remedy.kind == "renorm" else None
    end = run_loop(model, optimizer, stream, config.steps, [curve] + ([factors] if factors else []))
    if end.diverged_at is not None:
        curve.evaluate(model, end.done)
    renorm = {}
    if factors is not None and factors.r:
        renorm = dict(renorm_r=np.stack(factors.r), renorm_d=np.stack(factors.d),
                      renorm_limits=np.asarray(factors.limits[:len(factors.r)]))
    return RemedyRun(remedy=remedy.kind, label=remedy.label, batch_size=config.batch_size, sampling=sampling,
                     eval_steps=np.asarray(curve.eval_steps), test_acc=np.asarray(curve.test_acc),
                     losses=np.asarray(curve.losses), diverged_at=end.diverged_at, **renorm)


@dataclass(frozen=True)
class RemedyStudy:
    sweep: list[RemedyRun]       # i.i.d. batches, every remedy x batch size
    two_class: list[RemedyRun]   # every remedy at the config's batch size, i.i.d. and two-class
    batch_sizes: tuple[int, ...]


def study(config: Config, remedies: Sequence[Remedy], batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
          progress: Report | None = None) -> RemedyStudy:
    """Every remedy on the i.i.d. sweep over ``batch_sizes`` and, at ``config.batch_size``, on
    i.i.d. and two-class batches (the i.i.d. run is shared with the sweep when its size is in it)."""
    data = load(config)
    jobs = [(r, b, "iid") for r in remedies for b in batch_sizes]
    jobs += [(r, config.batch_size, s) for r in remedies for s in SAMPLINGS
             if s == "two-class" or config.batch_size not in batch_sizes]
    done: dict[tuple[str, int, str], RemedyRun] = {}
    for i, (remedy, b, sampling) in enumerate(jobs):
        def step(n: int, i=i, remedy=remedy, b=b, sampling=sampling) -> None:
            if progress is not None:
                progress(i * config.steps + n, len(jobs) * config.steps,
                         f"{remedy.label}, batch {b}, {sampling} batches: step {n}/{config.steps}")
        done[(remedy.kind, b, sampling)] = train_remedy(config.replace(batch_size=b), remedy, sampling,
                                                        data=data, progress=step)
    return RemedyStudy(sweep=[done[(r.kind, b, "iid")] for r in remedies for b in batch_sizes],
                       two_class=[done[(r.kind, config.batch_size, s)] for r in remedies for s in SAMPLINGS],
                       batch_sizes=tuple(batch_sizes))


def by_label(runs: Sequence[RemedyRun]) -> Mapping[str, list[RemedyRun]]:
    out: dict[str, list[RemedyRun]] = {}
    for run in runs:
        out.setdefault(run.label, []).append(run)
    return out
