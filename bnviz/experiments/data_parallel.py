"""BatchNorm across devices: DistributedDataParallel in 2-4 CPU processes, plain BN vs synchronized BN.

Data-parallel training splits every global batch of ``world_size * b`` samples into one
per-device batch of ``b`` per process; DistributedDataParallel (DDP) averages the gradients, so
the update is the one of the global batch. BN is the exception: plain BN normalizes each
per-device batch by its own statistics (the network trains like one with batch ``b`` in BN's
eyes), while synchronized BN (:mod:`bnviz.sync_bn`) all-reduces them, so every process normalizes
by the statistics of the global batch.

The running statistics are buffers, not parameters: DDP does not average them. With its default
``broadcast_buffers=True`` every process receives rank 0's buffers at the start of each forward
pass (so they differ only by one update); with ``False`` each process keeps its own and they drift
apart. Synchronized BN updates them with the global statistics: the same in every process.

:func:`run` starts the job with :func:`bnviz.distributed.run_workers` (bounded in time, always torn
down). Each worker trains every :class:`Variant` in turn with :func:`bnviz.train.run_loop` and
records its first BN layer with :class:`bnviz.recorder.Recorder` in its own process.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..config import Config, check
from ..data import Dataset, batches, load
from ..distributed import Report, run_workers
from ..models import Net, accuracy, build
from ..recorder import Recorder
from ..sync_bn import convert_sync_batchnorm
from ..train import Callback, make_optimizer, run_loop

MODES = ("plain BN", "synchronized BN")
DEFAULT_PER_DEVICE = (2, 4, 8, 16)
MAX_WORLD = 4
# The job's time limit: start-up, then a budget per step of every variant in every process (a step
# of these small networks takes 2-20 ms on a busy 2-core machine; the budget is several times that).
START_UP_S = 60.0
PER_STEP_S = 0.05


@dataclass(frozen=True)
class Variant:
    mode: str                 # one of MODES
    per_device: int           # b: samples per process and step
    broadcast_buffers: bool = True

    @property
    def label(self) -> str:
        extra = "" if self.broadcast_buffers else ", broadcast_buffers=False"
        return f"{self.mode}, {self.per_device} per device{extra}"


@dataclass(frozen=True)
class RankRecord:
    """What one process saw of one variant: its first BN layer's per-channel batch mean and
    running mean at the recorded steps (after that step's update of the running statistics), and
    its final eval-mode test accuracy with its own running statistics."""

    steps: np.ndarray            # (T,)
    batch_mean: np.ndarray       # (T, C)
    running_mean: np.ndarray     # (T, C)
    test_acc: float
    diverged_at: int | None


def sharded_batches(data: Dataset, per_device: int, world_size: int, rank: int,
                    generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This process's slice of every global batch: global batches of ``world_size * per_device``
    drawn as a single process would draw them (every process draws the same with the same
    generator seed), rows ``rank * per_device`` to ``(rank + 1) * per_device``."""
    rows = slice(rank * per_device, (rank + 1) * per_device)
    while True:
        for x, y in batches(data.x_train, data.y_train, world_size * per_device, generator):
            yield x[rows], y[rows]


class FirstBatchNorm(Callback):
    """Records the first recorded layer every ``every`` steps and after the last; reports progress."""

    def __init__(self, model: Net, every: int, steps: int, report: Callable[[int], None]):
        self.recorder = Recorder(model, model.recorded_layers()[:1])
        self.every, self.steps, self.report = every, steps, report
        self.taken: list[tuple[int, np.ndarray, np.ndarray]] = []

    def before_step(self, step, model, x, y):
        if step % self.every == 0 or step == self.steps - 1:
            self.recorder.arm()

    def after_forward(self, step, logits, loss, y):
        if self.recorder.armed:
            snap = self.recorder.collect(step)
            norm = snap.norms.get(0) if snap is not None else None
            if norm is not None and norm.batch_mean is not None:
                self.taken.append((step, norm.batch_mean, norm.running_mean))

    def after_step(self, step, model, loss):
        if (step + 1) % 10 == 0:
            self.report(step + 1)


def train_variant(config: Config, variant: Variant, data: Dataset, rank: int, world_size: int,
                  report: Callable[[int], None] = lambda done: None) -> RankRecord:
    """In a worker of an initialized process group: train ``config``'s BN network under DDP with
    ``variant`` and return this process's record. Every process builds the same initial weights
    (seed ``config.seed``; DDP also broadcasts rank 0's at construction)."""
    cfg = config.replace(batch_size=variant.per_device, norm="batchnorm")
    model = build(cfg, tuple(data.x_train.shape[1:]), data.n_classes, torch.Generator().manual_seed(cfg.seed))
    if variant.mode == "synchronized BN":
        model = convert_sync_batchnorm(model)
    with warnings.catch_warnings():
        # torch 2.13 suggests forward_sync_buffers, which would still sync the buffers at start-up:
        # broadcast_buffers=False is the setting whose drift the page shows.
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=variant.broadcast_buffers)
    optimizer = make_optimizer(cfg, ddp)
    stream = sharded_batches(data, variant.per_device, world_size, rank, torch.Generator().manual_seed(cfg.seed + 1))
    record = FirstBatchNorm(model, max(cfg.record_every, 1), cfg.steps, report)
    end = run_loop(ddp, optimizer, stream, cfg.steps, [record])
    model.eval()
    with torch.no_grad():
        acc = accuracy(model(data.x_test), data.y_test)
    steps, means, running = zip(*record.taken) if record.taken else ((), (), ())
    return RankRecord(steps=np.asarray(steps), batch_mean=np.asarray(means), running_mean=np.asarray(running),
                      test_acc=acc, diverged_at=end.diverged_at)


def _worker(rank: int, world_size: int, report: Report, config: Config,
            variants: Sequence[Variant]) -> tuple[int, list[RankRecord]]:
    data = load(config)
    out = []
    for i, variant in enumerate(variants):
        out.append(train_variant(config, variant, data, rank, world_size,
                                 lambda done, i=i: report(i * config.steps + done, len(variants) * config.steps)))
    return os.getpid(), out


@dataclass(frozen=True)
class Study:
    config: Config
    world_size: int
    variants: list[Variant]
    records: list[list[RankRecord]]       # records[rank][variant index]
    elapsed_s: float
    pids: list[int]                        # the worker processes' ids (all ended by now)

    def per_rank(self, variant: Variant) -> list[RankRecord]:
        i = self.variants.index(variant)
        return [r[i] for r in self.records]

    def accuracy(self, variant: Variant) -> float:
        """Rank 0's eval-mode test accuracy (the checkpoint a job usually saves)."""
        return self.per_rank(variant)[0].test_acc


def variants_for(per_device: int, sizes: Sequence[int] = DEFAULT_PER_DEVICE) -> list[Variant]:
    """Plain and synchronized BN at every per-device size, and plain BN without buffer broadcast
    at ``per_device``."""
    out = [Variant(mode, b) for b in sorted(set(sizes) | {per_device}) for mode in MODES]
    return out + [Variant("plain BN", per_device, broadcast_buffers=False)]


def time_limit(config: Config, world_size: int, sizes: Sequence[int] = DEFAULT_PER_DEVICE) -> float:
    """Seconds the job of :func:`run` may take before it is stopped."""
    return START_UP_S + PER_STEP_S * config.steps * len(variants_for(config.batch_size, sizes)) * world_size


def problems(config: Config, world_size: int) -> list[str]:
    out = []
    if not 1 <= world_size <= MAX_WORLD:
        out.append(f"Between 1 and {MAX_WORLD} processes, please (got {world_size}).")
    if config.batch_size < 2:
        out.append("Each process needs at least 2 samples per step: plain BN cannot normalize a per-device "
                   "batch of one.")
    return out


def run(config: Config, world_size: int = 2, sizes: Sequence[int] = DEFAULT_PER_DEVICE,
        progress: Callable[[int, int, str], None] | None = None, timeout_s: float | None = None) -> Study:
    """Train every variant of :func:`variants_for` (``config.batch_size`` per device) in one job of
    ``world_size`` processes. Raises :class:`bnviz.distributed.DistributedError` if the job cannot
    start, fails or takes longer than ``timeout_s`` (default :func:`time_limit`); its processes are
    gone either way."""
    check(config.replace(norm="batchnorm"))
    found = problems(config, world_size)
    if found:
        raise ValueError(" ".join(found))
    variants = variants_for(config.batch_size, sizes)
    start = time.perf_counter()
    limit = time_limit(config, world_size, sizes) if timeout_s is None else timeout_s
    results = run_workers(_worker, world_size, (config, variants), timeout_s=limit, progress=progress)
    return Study(config=config, world_size=world_size, variants=variants, records=[r for _, r in results],
                 elapsed_s=time.perf_counter() - start, pids=[pid for pid, _ in results])
