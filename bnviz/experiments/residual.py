"""Branch against skip path in residual networks, at initialization and while they train.

De & Smith (2020), *Batch Normalization Biases Residual Blocks Towards the Identity Function in
Deep Networks*: in a block ``x_{l+1} = x_l + f_l(x_l)`` whose branch ends in a normalized layer,
the branch adds a variance of about 1 whatever ``x_l`` is, so at initialization

    Var(x_{l+1}) = Var(x_l) + 1,   Var(x_l) = Var(x_0) + l   (pre-activation BN, He init)

and the branch's share, ``1 / (Var(x_0) + l)``, shrinks with depth: deep blocks start close to the
identity, which is why deep BN ResNets train. Without normalization a He-initialized branch keeps
the variance of its input, so the skip path doubles at every block,

    Var(x_{l+1}) = 2 Var(x_l),   Var(x_l) = 2^l Var(x_0)   (no normalization),

and SkipInit (a scalar alpha = 0 on the branch) or Fixup (last layer of the branch at 0) restore
the identity at initialization without normalization. Both laws hold in expectation over the
weights; ``tests/test_residual.py`` checks them by Monte-Carlo over wide networks.

"Variance" of a tensor here is the variance of all its values (samples and units together,
``TapStats.std ** 2``), as recorded by :class:`bnviz.recorder.Recorder` at the network's
:meth:`~bnviz.resnets.ResNet.branch_layers`: the skip path of block ``l`` is the output of block
``l - 1`` (of the stem for the first block). Recorded on training-mode forward passes of the
training batches (BN normalizes by batch statistics), at step 0 (initialization) and during
training, by a callback of the one training loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..config import Config
from ..data import Dataset, load
from ..record import Snapshot
from ..recorder import Recorder
from ..resnets import ResNet, build_resnet
from ..train import Callback, Curves, LoopProgress, build_for, train_steps

# label -> (block style, zero-init of the last gamma)
VARIANTS: dict[str, tuple[str, bool]] = {
    "original (post-activation BN)": ("post", False),
    "pre-activation BN": ("pre", False),
    "SkipInit (no norm)": ("skipinit", False),
    "Fixup (no norm)": ("fixup", False),
    "no normalization": ("none", False),
}
ZERO_GAMMA = ", last γ = 0"
RECORDINGS = 10   # recorded steps per run after step 0


def variants(zero_gamma: bool) -> dict[str, tuple[str, bool]]:
    """:data:`VARIANTS`, the two BN ones with their last gamma at 0 when ``zero_gamma``."""
    out = {}
    for label, (style, _) in VARIANTS.items():
        bn = style in ("post", "pre")
        out[label + (ZERO_GAMMA if bn and zero_gamma else "")] = (style, bn and zero_gamma)
    return out


def dataset_for(config: Config) -> Config:
    """The config with the data set the architecture needs: images for the CNN-ResNet."""
    if config.arch == "cnn" and config.dataset not in ("digits-image", "mnist", "fashion-mnist"):
        return config.replace(dataset="digits-image")
    return config


def model_for(config: Config, data: Dataset, style: str, zero_init: bool, n_blocks: int) -> ResNet:
    """The ResNet of one variant, its weights drawn from a generator seeded by ``config.seed``
    (every variant of one seed starts from the same draws)."""
    return build_resnet(style, tuple(data.x_train.shape[1:]), data.n_classes, arch=config.arch, width=config.width,
                        n_blocks=n_blocks, zero_init=zero_init, generator=torch.Generator().manual_seed(config.seed))


@dataclass(frozen=True)
class BlockVariances:
    """Per block (l = 1 .. L) at one step: the variance of its skip path (its input) and of its
    branch's output, and their ratio branch / skip (0 when the branch is exactly 0)."""

    step: int
    skip: np.ndarray      # (L,)
    branch: np.ndarray    # (L,)

    @property
    def ratio(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.branch / self.skip

    @property
    def blocks(self) -> np.ndarray:
        return np.arange(1, len(self.skip) + 1)


def variances(snapshot: Snapshot, n_blocks: int) -> BlockVariances:
    """Skip and branch variances from a snapshot of :meth:`ResNet.branch_layers` (layer 0: the
    stem, then 2l - 1: block l's branch, 2l: block l)."""
    var = {i: snapshot.taps[(i, "output")].std ** 2 for i in range(2 * n_blocks + 1)}
    skip = np.array([var[2 * l - 2] for l in range(1, n_blocks + 1)])
    branch = np.array([var[2 * l - 1] for l in range(1, n_blocks + 1)])
    return BlockVariances(step=snapshot.step, skip=skip, branch=branch)


def expected_skip(kind: str, var0: float, n_blocks: int) -> np.ndarray:
    """The skip path's variance at block l = 1 .. L in expectation at initialization, from the
    stem's ``var0``: ``var0 + (l - 1)`` with BN ending each branch (``"pre"``), ``var0 * 2**(l-1)``
    without normalization (``"none"``)."""
    l = np.arange(n_blocks)
    if kind == "pre":
        return var0 + l
    if kind == "none":
        return var0 * 2.0 ** l
    raise ValueError(f"no closed form for {kind!r}")


class _BranchRecording(Callback):
    """Records branch and skip variances on the training forward passes of ``steps``."""

    def __init__(self, model: ResNet, steps: Sequence[int]):
        self.recorder = Recorder(model, model.branch_layers())
        self.steps = set(steps)
        self.n_blocks = len(model.blocks)
        self.recorded: list[BlockVariances] = []

    def before_step(self, step, model, x, y):
        if step in self.steps:
            self.recorder.arm()

    def after_forward(self, step, logits, loss, y):
        if self.recorder.armed:
            snap = self.recorder.collect(step)
            if snap is not None:
                self.recorded.append(variances(snap, self.n_blocks))


def at_init(config: Config, n_blocks: int, zero_gamma: bool = False) -> dict[str, BlockVariances]:
    """Each variant's variances on the first training batch at initialization (what step 0 of
    :func:`train_variant` records), without training: the page's first, fast figure."""
    config = dataset_for(config)
    data = load(config)
    out = {}
    for label, (style, zero) in variants(zero_gamma).items():
        model = model_for(config, data, style, zero, n_blocks)
        _, _, stream = build_for(config, data, model)
        recording = _BranchRecording(model, [0])
        x, y = next(stream)
        model.train()
        recording.before_step(0, model, x, y)
        with torch.no_grad():
            logits = model(x)
        recording.after_forward(0, logits, float("nan"), y)
        out[label] = recording.recorded[0]
    return out


@dataclass(frozen=True)
class ResidualRun:
    """One variant trained: its curves and the variances recorded along the way."""

    label: str
    curves: Curves
    recorded: tuple[BlockVariances, ...]

    def at(self, step: int) -> BlockVariances | None:
        """The recording at the largest recorded step <= ``step``."""
        before = [r for r in self.recorded if r.step <= step]
        return before[-1] if before else None


def recorded_steps(steps: int) -> list[int]:
    """Step 0 and :data:`RECORDINGS` evenly spaced steps up to the last one."""
    return sorted({0, *np.linspace(0, steps - 1, RECORDINGS + 1).round().astype(int).tolist()})


def train_variant(config: Config, label: str, style: str, zero_init: bool, n_blocks: int,
                  progress: LoopProgress | None = None) -> ResidualRun:
    """Train one variant with ``config``'s optimizer, batches and steps (the one loop), recording
    its variances at :func:`recorded_steps`."""
    config = dataset_for(config)
    data = load(config)
    model = model_for(config, data, style, zero_init, n_blocks)
    recording = _BranchRecording(model, recorded_steps(config.steps))
    curves, _ = train_steps(config, dataset=data, model=model, callbacks=[recording], progress=progress)
    return ResidualRun(label=label, curves=curves, recorded=tuple(recording.recorded))


def train_all(config: Config, n_blocks: int, zero_gamma: bool = False,
              progress: Callable[[int, int, str], None] | None = None) -> dict[str, ResidualRun]:
    """Every variant of :func:`variants`, trained with the same seed, batches and steps."""
    jobs = variants(zero_gamma)
    out: dict[str, ResidualRun] = {}
    for i, (label, (style, zero)) in enumerate(jobs.items()):
        def report(done: int, total: int, i=i, label=label) -> None:
            if progress is not None:
                progress(i * total + done, len(jobs) * total, f"{label}: step {done}/{total}")
        out[label] = train_variant(config, label, style, zero, n_blocks, report)
    return out

