"""Gradient accumulation: a batch of 64 as k micro-batches, and what BatchNorm makes of it.

Accumulating the gradients of k micro-batches of 64 / k before one update gives exactly the
gradient of the batch of 64 for a network whose layers treat samples independently: GroupNorm
and LayerNorm normalize each sample by its own statistics. BatchNorm does not: each micro-batch
is normalized by its own mean and variance, and the running statistics are updated k times per
update, each time with a micro-batch's statistics. So the network trains like one with batch
64 / k in BN's eyes: noisier batch statistics (their standard error grows by sqrt(k)) and a
different eval-mode network.

:func:`compare` trains, per normalization, the "true batch" run and the "accumulated" run from
the same seed: the same initial weights and the same batches of 64, step for step (a paired
comparison). The recorder takes the first BN layer's per-channel batch statistics at every step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import Config, check
from ..data import Dataset, load
from ..models import Net
from ..recorder import Recorder
from ..train import Callback, build_for, micro_batch_slices, run_loop
from .small_batch import EvalCurve

NORMS = ("batchnorm", "groupnorm", "layernorm")
NORM_LABELS = {"batchnorm": "BatchNorm", "groupnorm": "GroupNorm", "layernorm": "LayerNorm"}
MODES = ("true batch", "accumulated")

Report = Callable[[int, int, str], None]


class FirstLayerStats(Callback):
    """The first hidden layer's per-channel batch mean and biased variance at every step, from
    the recorder (for an accumulated step: of its first micro-batch, the forward pass the
    recorder is armed for)."""

    def __init__(self, model: Net):
        self.recorder = Recorder(model, model.recorded_layers()[:1])
        self.means: list[np.ndarray] = []
        self.variances: list[np.ndarray] = []

    def before_step(self, step, model, x, y):
        self.recorder.arm()

    def after_forward(self, step, logits, loss, y):
        snap = self.recorder.collect(step)
        norm = snap.norms.get(0) if snap is not None else None
        if norm is not None and norm.batch_mean is not None:
            self.means.append(norm.batch_mean.astype(np.float64))
            self.variances.append(norm.batch_var.astype(np.float64))


@dataclass(frozen=True)
class MeanNoise:
    """Noise of the first BN layer's per-channel batch mean over the second half of training.

    ``measured``: sqrt(mean_t (m_{t+1} - m_t)^2 / 2) per channel, the successive-difference
    estimate of the step-to-step standard deviation (differences cancel the slow drift of the
    true mean as the weights train). ``theory``: sigma / sqrt(n) with sigma^2 the average unbiased
    batch variance and n the batch the statistics were taken over.
    """

    n: int
    measured: np.ndarray
    theory: np.ndarray

    @property
    def rms(self) -> float:
        """Root mean square of ``measured`` over channels."""
        return float(np.sqrt(np.mean(self.measured ** 2)))

    @property
    def pooled_ratio(self) -> float:
        """sqrt(sum measured^2 / sum theory^2): 1 where the sigma / sqrt(n) law holds."""
        total = float(np.sum(self.theory ** 2))
        return math.sqrt(float(np.sum(self.measured ** 2)) / total) if total > 0 else math.nan


def mean_noise(means: Sequence[np.ndarray], variances: Sequence[np.ndarray], n: int) -> MeanNoise | None:
    """:class:`MeanNoise` of the second half of ``means`` / ``variances`` (biased, per step, (C,)
    each) of batches of ``n``; None with fewer than 6 steps or n < 2."""
    half = len(means) // 2
    if len(means) - half < 3 or n < 2:
        return None
    m = np.stack(means[half:])
    measured = np.sqrt(np.mean(np.diff(m, axis=0) ** 2, axis=0) / 2.0)
    sigma2 = np.mean(np.stack(variances[half:]), axis=0) * n / (n - 1)
    return MeanNoise(n=n, measured=measured, theory=np.sqrt(sigma2 / n))


@dataclass(frozen=True)
class AccumulationRun:
    norm: str
    mode: str                    # "true batch" or "accumulated"
    batch_size: int
    micro_batches: int           # 1 for the true batch
    eval_steps: np.ndarray
    test_acc: np.ndarray         # eval mode
    losses: np.ndarray
    noise: MeanNoise | None      # BN runs only
    diverged_at: int | None

    @property
    def label(self) -> str:
        if self.micro_batches == 1:
            return f"{NORM_LABELS[self.norm]}, true batch {self.batch_size}"
        return f"{NORM_LABELS[self.norm]}, {self.micro_batches} x {self.batch_size // self.micro_batches} accumulated"

    @property
    def final_acc(self) -> float:
        return float(self.test_acc[-1]) if len(self.test_acc) else math.nan


def problems(config: Config, micro_batches: int) -> list[str]:
    """Why this accumulation cannot run (for the page), or []."""
    if micro_batches < 1 or config.batch_size // micro_batches < 2:
        return [f"A batch of {config.batch_size} cut into {micro_batches} micro-batches leaves fewer than 2 samples "
                "per micro-batch: BatchNorm cannot normalize a batch of one. Choose fewer micro-batches or a "
                "larger batch."]
    return []


def train_accumulated(config: Config, micro_batches: int, *, data: Dataset | None = None,
                      progress: Callable[[int], None] | None = None) -> AccumulationRun:
    """Train ``config`` (batch ``config.batch_size``) with the gradient of each batch accumulated
    over ``micro_batches`` micro-batches (1: the true batch)."""
    check(config)
    found = problems(config, micro_batches)
    if found:
        raise ValueError(found[0])
    data = data if data is not None else load(config)
    model, optimizer, stream = build_for(config, data)
    stats = FirstLayerStats(model)
    curve = EvalCurve(data, config.eval_every, config.steps, progress)
    curve.evaluate(model, 0)
    end = run_loop(model, optimizer, stream, config.steps, [stats, curve], micro_batches=micro_batches)
    n = micro_batch_slices(config.batch_size, micro_batches)[0].stop
    noise = mean_noise(stats.means, stats.variances, n) if config.norm == "batchnorm" else None
    return AccumulationRun(norm=config.norm, mode=MODES[micro_batches > 1], batch_size=config.batch_size,
                           micro_batches=micro_batches, eval_steps=np.asarray(curve.eval_steps),
                           test_acc=np.asarray(curve.test_acc), losses=np.asarray(curve.losses), noise=noise,
                           diverged_at=end.diverged_at)


def compare(config: Config, micro_batches: int, norms: Sequence[str] = NORMS,
            progress: Report | None = None) -> list[AccumulationRun]:
    """Per normalization, the true-batch run and the accumulated run (same seed: same initial
    weights and batches)."""
    data = load(config)
    jobs = [(norm, k) for norm in norms for k in (1, micro_batches)]
    out = []
    for i, (norm, k) in enumerate(jobs):
        def step(n: int, i=i, norm=norm, k=k) -> None:
            if progress is not None:
                what = "true batch" if k == 1 else f"{k} micro-batches"
                progress(i * config.steps + n, len(jobs) * config.steps,
                         f"{NORM_LABELS[norm]}, {what}: step {n}/{config.steps}")
        out.append(train_accumulated(config.replace(norm=norm), k, data=data, progress=step))
    return out
