"""Every training step's batch statistics of each BatchNorm layer, and the running statistics any
momentum would have made of them, without training again.

Why this exists: in training mode BN normalizes with the batch's own mean and variance, so the
weights, the losses and every training-mode activation are the same whatever the BN momentum.
Momentum only decides how the running statistics average the batch statistics, and with them what
eval mode computes. Keep the batch statistics of every step (C numbers per layer per step) and a
momentum change is an average recomputed in milliseconds instead of a run trained again.

How they are read: while :func:`bnviz.train.train` trains, each BN layer runs with momentum 1, so
right after a forward pass its buffers hold exactly that batch's mean and unbiased variance
(torch: ``running = (1 - m) * running + m * batch`` with m = 1); :meth:`BatchTrace.capture`
copies them into one row per step. Training itself does not change (the buffers are never read in
training mode), and :meth:`BatchTrace.finish` leaves the layers with the running statistics and
the momentum the config names.

The average is replayed as torch computes it: in float64 from float32 buffers, rounded to float32
after every step; with ``momentum=None`` the weight of batch t is 1/t (the cumulative average).
The replay equals a run trained with that momentum to ~1e-7 relative (tests: 1e-6).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

# Past this many float32 numbers a run keeps no trace (a momentum change then trains again): a
# default run holds 1,000 steps x 600 numbers = 0.6 M.
MAX_VALUES = 4_000_000


class BatchTrace:
    """Batch mean and unbiased batch variance per channel of ``norms`` at each of ``steps`` steps.

    ``rows[t]`` is step t: for each layer in order its C means, then its C variances.
    """

    def __init__(self, norms: Sequence[tuple[int, nn.Module]], steps: int):
        self.layers = [i for i, _ in norms]
        self.sizes = [int(m.running_mean.numel()) for _, m in norms]
        self.rows = torch.zeros(steps, 2 * sum(self.sizes))
        self.done = 0                      # steps captured
        self._modules = [m for _, m in norms]
        self._buffers = [b for m in self._modules for b in (m.running_mean, m.running_var)]
        self._momenta = [m.momentum for m in self._modules]

    @classmethod
    def start(cls, norms: Sequence[tuple[int, nn.Module]], steps: int) -> "BatchTrace | None":
        """Set the layers to momentum 1 and return the trace to fill; None (layers untouched) when
        there is nothing to trace (no BN tracking running statistics) or it would be too large."""
        norms = [(i, m) for i, m in norms if getattr(m, "track_running_stats", False)
                 and isinstance(getattr(m, "running_mean", None), torch.Tensor)]
        if any(m.running_mean.dtype != torch.float32 or m.running_var.dtype != torch.float32 for _, m in norms):
            return None      # the trace is float32 rows; other buffers train without one
        width = 2 * sum(int(m.running_mean.numel()) for _, m in norms)
        if not norms or steps * width > MAX_VALUES:
            return None
        trace = cls(norms, steps)
        for m in trace._modules:
            m.momentum = 1.0
        return trace

    def capture(self, step: int) -> None:
        """Copy the buffers after the training forward pass of ``step`` (one ``torch.cat``)."""
        torch.cat(self._buffers, out=self.rows[step])
        self.done = step + 1

    def batch_stats(self, step: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Layer index -> (mean, unbiased variance) of the batch at ``step``."""
        return _split(self.rows[step].numpy(), self.layers, self.sizes)

    def replay(self, momentum: float | None) -> "Replay":
        """The running statistics ``momentum`` makes of the captured batches, step by step."""
        return Replay(self, momentum)

    @contextmanager
    def running_buffers(self, stats: dict[int, tuple[np.ndarray, np.ndarray]]) -> Iterator[None]:
        """The layers' buffers set to ``stats`` (from :meth:`Replay.at`) for an evaluation, then
        reset to zeros and ones: with momentum 1 the next forward pass overwrites them
        (``0 * old + batch``), and a non-finite value left in them would make that NaN."""
        self._load(stats)
        try:
            yield
        finally:
            with torch.no_grad():
                for m in self._modules:
                    m.running_mean.zero_()
                    m.running_var.fill_(1.0)

    def finish(self, stats: dict[int, tuple[np.ndarray, np.ndarray]] | None) -> None:
        """Give the layers back their momentum and the running statistics ``stats`` (those of the
        last step captured; None: no step was, the buffers keep torch's initial values); keep
        nothing live, as the trace travels with its run."""
        if stats is not None:
            self._load(stats)
        for m, original in zip(self._modules, self._momenta):
            m.momentum = original
        self._modules, self._buffers = [], []
        self.rows = self.rows[:self.done].clone()

    def _load(self, stats: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        load_running(dict(zip(self.layers, self._modules)), stats)


class Replay:
    """The running statistics of a :class:`BatchTrace` under one momentum, replayed as torch
    computes them (see the module docstring). :meth:`at` only moves forward: asking for
    increasing steps costs one pass over the trace in all. Not shared between threads: each
    caller makes its own with :meth:`BatchTrace.replay`."""

    def __init__(self, trace: BatchTrace, momentum: float | None):
        self.trace, self.momentum = trace, momentum
        self.step = -1
        self.value = np.concatenate([np.concatenate([np.zeros(c, np.float32), np.ones(c, np.float32)])
                                     for c in trace.sizes])

    def at(self, step: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Layer index -> (running_mean, running_var) right after the forward pass of ``step``
        (-1: before any, torch's initial zeros and ones)."""
        if step < self.step:
            raise ValueError(f"replay is at step {self.step}; it cannot go back to {step}")
        first = self.step + 1
        if step >= first:
            ts = np.arange(first, step + 1)
            f = 1.0 / (ts + 1.0) if self.momentum is None else np.full(len(ts), float(self.momentum))
            # f * batch for every step at once, in float64; then per step (1 - f) * value + that,
            # rounded to float32: the very operations of the loop torch runs, with no array made
            # inside it.
            weighted = self.trace.rows.numpy()[first:step + 1].astype(np.float64)
            weighted *= f[:, None]
            value64 = self.value.astype(np.float64)
            value32 = self.value.copy()
            for k, keep in enumerate((1.0 - f).tolist()):
                np.multiply(value64, keep, out=value64)
                np.add(value64, weighted[k], out=value64)
                value32[...] = value64
                value64[...] = value32
            self.value = value32
        self.step = max(step, self.step)
        return _split(self.value, self.trace.layers, self.trace.sizes)


def load_running(norms: Mapping[int, nn.Module], stats: Mapping[int, tuple[np.ndarray, np.ndarray]]) -> None:
    """Copy ``stats`` (layer index -> (running_mean, running_var)) into the layers' buffers."""
    with torch.no_grad():
        for i, m in norms.items():
            m.running_mean.copy_(torch.from_numpy(stats[i][0]))
            m.running_var.copy_(torch.from_numpy(stats[i][1]))


def _split(row: np.ndarray, layers: Sequence[int], sizes: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out, at = {}, 0
    for i, c in zip(layers, sizes):
        out[i] = (row[at:at + c].copy(), row[at + c:at + 2 * c].copy())
        at += 2 * c
    return out
