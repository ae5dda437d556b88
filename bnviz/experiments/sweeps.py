"""How BatchNorm depends on the batch: one sample's output across batches, and a batch-size sweep.

Two questions the batch-size page answers with numbers from real networks:

* **Train vs eval mode for one input.** In training mode BN normalizes with the statistics of the
  batch the input happens to be in, so the same input gets different logits in different batches;
  in eval mode it uses the running statistics and the output is a function of the input alone.
  :func:`batch_dependence` measures the spread; :func:`batch_of_one_probabilities` shows why a
  batch of one cannot work in training mode (every input gets the same output).
* **Batch-size sweep.** The same network trained with BatchNorm, GroupNorm, LayerNorm and no
  normalization at several batch sizes (Wu & He, "Group Normalization", ECCV 2018, Figure 1: on
  ResNet-50 / ImageNet BN's error rises from 23.6 % at 32 images per GPU to 34.7 % at 2, while GN
  stays near 24 %). :func:`sweep_configs` names the runs; :func:`summarize` reads their final
  eval accuracy and the noise of the first BN layer's batch mean, which :func:`batch_mean_noise`
  compares with the closed form sigma / sqrt(n).

Every run takes the same number of steps, so a small batch also sees fewer samples; the
no-normalization runs show how much accuracy that alone costs.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from .. import theory
from ..config import Config, ConfigError, check, parse_list, parse_number
from ..models import Net
from ..train import Run, batchnorm_train_mode, preserved_norm_state

DEFAULT_BATCH_SIZES = (2, 4, 8, 16, 32, 64)
SWEEP_NORMS = ("batchnorm", "groupnorm", "layernorm", "none")
NORM_LABELS = {"batchnorm": "BatchNorm", "reference": "BatchNorm (reference)", "groupnorm": "GroupNorm",
               "layernorm": "LayerNorm", "none": "no normalization"}
# BN runs record a snapshot every NOISE_RECORD_EVERY steps: the batch means the noise is measured on.
NOISE_RECORD_EVERY = 2
# The noise is measured over the last half of training, where the weights (and so the true mean of
# the layer's input) move slowly.
NOISE_FROM = 0.5


# ----------------------------------------------------------------------------------------------
# One input in train and eval mode


@dataclass(frozen=True)
class BatchDependence:
    """Class probabilities of one input, alone in eval mode and inside random batches in train mode.

    ``train_probs[k]`` is the softmax output for the input when it is one of ``batch_size`` samples
    of the k-th random batch and BN uses that batch's statistics (dropout off).
    """

    index: int
    label: int
    batch_size: int
    eval_probs: np.ndarray          # (classes,)
    train_probs: np.ndarray         # (n_batches, classes)
    eval_in_batch_max_diff: float   # max |eval logits alone - eval logits inside a batch|

    @property
    def eval_class(self) -> int:
        return int(np.argmax(self.eval_probs))

    @property
    def flip_rate(self) -> float:
        """Share of batches in which train mode predicts another class than eval mode."""
        return float(np.mean(np.argmax(self.train_probs, axis=1) != self.eval_class))

    @property
    def total_variation(self) -> float:
        """Mean over batches of the total-variation distance between train- and eval-mode
        probabilities, 0.5 * sum_k |p_train,k - p_eval,k| (0: identical, 1: disjoint)."""
        return float(np.mean(0.5 * np.abs(self.train_probs - self.eval_probs).sum(axis=1)))


def _companions(n_pool: int, index: int, batch_size: int, n_batches: int, seed: int) -> list[torch.Tensor]:
    """Index tensors of ``n_batches`` batches: ``index`` first, then ``batch_size - 1`` other pool
    samples drawn without replacement."""
    if batch_size > n_pool:
        raise ValueError(f"a batch of {batch_size} needs at least {batch_size} samples; the pool has {n_pool}")
    gen = torch.Generator().manual_seed(seed)
    others = torch.cat([torch.arange(index), torch.arange(index + 1, n_pool)])
    out = []
    for _ in range(n_batches):
        pick = others[torch.randperm(len(others), generator=gen)[:batch_size - 1]]
        out.append(torch.cat([torch.tensor([index]), pick]))
    return out


@torch.no_grad()
def batch_dependence(model: Net, pool: torch.Tensor, labels: torch.Tensor, index: int, batch_size: int,
                     n_batches: int = 100, seed: int = 0) -> BatchDependence:
    """How the output for ``pool[index]`` changes with the batch it is in (train-mode BN).

    Works on a copy: the caller's model (often a shared, cached run) is not touched. Raises
    ``ValueError`` for a batch of one (train-mode BN cannot normalize it; see
    :func:`batch_of_one_probabilities`) or an index outside the pool.
    """
    if not 0 <= index < len(pool):
        raise ValueError(f"sample index {index} is outside 0..{len(pool) - 1}")
    if batch_size < 2:
        raise ValueError("train-mode BatchNorm needs a batch of at least 2")
    net = copy.deepcopy(model)
    net.eval()
    alone = net(pool[index:index + 1])
    batches = _companions(len(pool), index, batch_size, n_batches, seed)
    in_batch = net(pool[batches[0]])[0:1]
    probs = []
    with preserved_norm_state(net):
        batchnorm_train_mode(net)
        for idx in batches:
            probs.append(torch.softmax(net(pool[idx])[0], dim=0))
    return BatchDependence(index=index, label=int(labels[index]), batch_size=batch_size,
                           eval_probs=torch.softmax(alone[0], dim=0).numpy(),
                           train_probs=torch.stack(probs).numpy(),
                           eval_in_batch_max_diff=float((alone - in_batch).abs().max()))


@torch.no_grad()
def eval_probabilities(model: Net, x: torch.Tensor) -> np.ndarray:
    """Eval-mode softmax outputs for the rows of ``x`` (on a copy: a shared model stays as it is)."""
    net = copy.deepcopy(model)
    net.eval()
    return torch.softmax(net(x), dim=1).numpy()


@torch.no_grad()
def batch_of_one_probabilities(model: Net, x: torch.Tensor) -> np.ndarray:
    """Softmax outputs train-mode BN would give each row of ``x`` if each were a batch of one.

    torch refuses a batch of one in training mode; this computes what it would produce. A batch
    of one has mean x and variance 0, so x_hat = (x - x) / sqrt(0 + eps) = 0 and every BN layer
    outputs beta whatever the input. A batch of two identical copies has exactly the same mean and
    variance, and torch accepts it, so the row is run as that pair. The result is the same row
    for every input: train mode cannot tell inputs apart.
    """
    net = copy.deepcopy(model)
    out = []
    with preserved_norm_state(net):
        batchnorm_train_mode(net)
        for row in x:
            pair = torch.stack([row, row])
            out.append(torch.softmax(net(pair)[0], dim=0))
    return torch.stack(out).numpy()


@torch.no_grad()
def batch_of_one_error(model: Net, x: torch.Tensor) -> str | None:
    """The error torch raises for one input ``x`` (shape (1, ...)) through train-mode BN, or None
    if the network has no BatchNorm layer (then a batch of one is fine)."""
    net = copy.deepcopy(model)
    if not net.batchnorms():
        return None
    batchnorm_train_mode(net)
    try:
        net(x)
    except (ValueError, RuntimeError) as exc:
        return str(exc)
    return None


# ----------------------------------------------------------------------------------------------
# Batch-size sweep


def sweep_label(norm: str, batch_size: int) -> str:
    return f"{NORM_LABELS.get(norm, norm)}, batch {batch_size}"


def sweep_config(config: Config, norm: str, batch_size: int) -> Config:
    """The run of the sweep for one (norm, batch size): ``config`` with those two changed.

    Only BN keeps batch statistics, so only BN runs record snapshots often enough to measure their
    noise; the others record just the first and last step, which keeps the sweep fast.
    """
    every = NOISE_RECORD_EVERY if norm in ("batchnorm", "reference") else max(config.steps, 1)
    return config.replace(norm=norm, batch_size=batch_size, record_every=every, eval_every=max(config.steps, 1),
                          bn_diagnostics=True)


def sweep_configs(config: Config, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                  norms: Sequence[str] = SWEEP_NORMS) -> tuple[dict[str, Config], list[str]]:
    """Label -> config for every (norm, batch size) that can train, and a note per skipped pair.

    A pair that cannot train (BatchNorm with a batch of one) is left out with the reason, so the
    rest of the sweep still runs.
    """
    out: dict[str, Config] = {}
    notes: list[str] = []
    for norm in norms:
        for b in batch_sizes:
            cfg = sweep_config(config, norm, b)
            try:
                check(cfg)
            except ConfigError as exc:
                notes.append(f"{sweep_label(norm, b)} skipped: {exc}")
                continue
            out[sweep_label(norm, b)] = cfg
    return out, notes


@dataclass(frozen=True)
class BatchMeanNoise:
    """Noise of one BN layer's batch mean over training steps, per channel, and its theory.

    ``measured_std``: the mean-square-successive-difference estimate (von Neumann, 1941) over the
    recorded steps, sqrt(mean_t (m_{t+1} - m_t)^2 / 2), where m_t is the channel's batch mean at
    recorded step t. Successive differences cancel the slow drift of the true mean as the weights
    train, leaving the batch-to-batch noise. ``sigma``: the channel's standard deviation, the root
    of the average unbiased batch variance (n / (n - 1) x the biased one BN recorded) over the same
    steps. ``theory_std``: sqrt(theory.batch_mean_variance(sigma^2, n)) = sigma / sqrt(n), for
    independent samples.
    """

    layer: int
    batch_size: int
    steps: np.ndarray
    measured_std: np.ndarray
    sigma: np.ndarray
    theory_std: np.ndarray

    @property
    def pooled_ratio(self) -> float:
        """sqrt(sum_c measured_c^2 / sum_c theory_c^2): one number for the layer, 1 where theory
        holds (variances pooled over channels, so it is not biased low as a median of square roots is)."""
        total = float(np.sum(self.theory_std ** 2))
        return math.sqrt(float(np.sum(self.measured_std ** 2)) / total) if total > 0 else math.nan

    @property
    def relative_std(self) -> np.ndarray:
        """measured std / sigma per channel: to compare with 1 / sqrt(n)."""
        keep = self.sigma > 0
        return self.measured_std[keep] / self.sigma[keep]


def first_batchnorm_layer(run: Run) -> int | None:
    """Index of the first layer whose snapshots hold a batch mean, or None."""
    for snap in run.history.snapshots:
        for layer in sorted(snap.norms):
            if snap.norms[layer].batch_mean is not None and snap.norms[layer].running_mean is not None:
                return layer
    return None


def batch_mean_noise(run: Run, layer: int | None = None, from_fraction: float = NOISE_FROM) -> BatchMeanNoise | None:
    """The batch-mean noise of ``layer`` (default: the first BN layer) over the last part of training.

    None when the run has no BN layer or fewer than three snapshots in that part.
    """
    if layer is None:
        layer = first_batchnorm_layer(run)
        if layer is None:
            return None
    n = run.config.batch_size
    start = run.config.steps * from_fraction
    steps, means, variances = [], [], []
    for step, snap in zip(run.history.snapshots.steps, run.history.snapshots.items):
        ns = snap.norms.get(layer)
        if step < start or ns is None or ns.batch_mean is None or ns.running_mean is None:
            continue
        steps.append(step)
        means.append(ns.batch_mean.astype(np.float64))
        variances.append(ns.batch_var.astype(np.float64) * n / (n - 1))
    if len(means) < 3 or n < 2:
        return None
    m = np.stack(means)
    measured = np.sqrt(np.mean(np.diff(m, axis=0) ** 2, axis=0) / 2.0)
    sigma2 = np.mean(np.stack(variances), axis=0)
    theory_std = np.sqrt(np.asarray(theory.batch_mean_variance(sigma2, n), dtype=np.float64))
    return BatchMeanNoise(layer=layer, batch_size=n, steps=np.asarray(steps), measured_std=measured,
                          sigma=np.sqrt(sigma2), theory_std=theory_std)


@dataclass(frozen=True)
class SweepPoint:
    norm: str
    batch_size: int
    test_acc: float                 # eval mode (BN: running statistics), after the last step
    test_acc_batch_stats: float     # BN normalizing each test batch (of the training size) by itself
    noise: BatchMeanNoise | None    # first BN layer's batch-mean noise (BN runs only)
    diverged: bool


@dataclass(frozen=True)
class Sweep:
    points: tuple[SweepPoint, ...]
    missing: tuple[str, ...]        # labels of runs stopped before the end (not in ``points``)

    def series(self, norm: str) -> list[SweepPoint]:
        return sorted((p for p in self.points if p.norm == norm), key=lambda p: p.batch_size)

    @property
    def norms(self) -> list[str]:
        return list(dict.fromkeys(p.norm for p in self.points))

    def accuracy(self, norm: str, batch_size: int) -> float | None:
        for p in self.points:
            if p.norm == norm and p.batch_size == batch_size:
                return p.test_acc
        return None


def summarize(runs: Mapping[str, Run], configs: Mapping[str, Config]) -> Sweep:
    """Final numbers of each sweep run (``configs`` as from :func:`sweep_configs`)."""
    points, missing = [], []
    for label, cfg in configs.items():
        run = runs.get(label)
        if run is None or run.history.stopped_at is not None or not run.history.evals:
            missing.append(label)
            continue
        last = run.history.evals[-1]
        diverged = run.history.diverged_at is not None
        acc = math.nan if diverged else last.test_acc
        acc_batch = math.nan if diverged else last.test_acc_batch_stats
        noise = batch_mean_noise(run) if cfg.norm in ("batchnorm", "reference") else None
        points.append(SweepPoint(norm=cfg.norm, batch_size=cfg.batch_size, test_acc=acc,
                                 test_acc_batch_stats=acc_batch, noise=noise, diverged=diverged))
    return Sweep(points=tuple(points), missing=tuple(missing))


def parse_batch_sizes(text: str, allowed: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
                      ) -> tuple[list[int], list[str]]:
    """Batch sizes from a comma-separated string (a URL value); bad items dropped with a note.

    Never raises. Sizes must be whole numbers among ``allowed`` (a bound on the work a link can ask for).
    """
    def size(item: str) -> int:
        value = parse_number(item)
        if value != int(value):
            raise ValueError(f"{item[:20]} is not a whole number")
        if int(value) not in allowed:
            raise ValueError(f"{int(value)} is not one of {', '.join(map(str, allowed))}")
        return int(value)

    sizes, notes = parse_list(str(text).replace(";", ","), size)
    return sorted(sizes), notes
