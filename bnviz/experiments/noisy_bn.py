"""Noisy BatchNorm: BN whose output is shifted and rescaled at random at every training step.

Santurkar et al. (2018, section 2.1, "Does BatchNorm's performance stem from controlling internal
covariate shift?") inject random noise after each BN layer, with a non-zero mean and a non-unit
variance that change from one step to the next, so the distribution every following layer sees
moves all the time: far more "internal covariate shift" than a network without BN has. The noisy
network still trains about as well as plain BN, which is their evidence that BN does not work by
keeping layer inputs stable.

Here, at every training step and for every unit (channel) ``j`` of every BN layer, BN's output
``y`` becomes ``s_j * y + m_j`` with ``m_j ~ U(-shift, shift)`` and ``s_j ~ U(1, scale)`` drawn
anew at each step (the same for all samples of the step, so each unit's mean moves by ``m_j``
and its standard deviation is multiplied by ``s_j``). In eval mode the noise is replaced by its
mean, ``E[s] * y + E[m] = (1 + scale) / 2 * y`` (as inverted dropout evaluates with the expected
mask): without that the evaluated network would see activations systematically smaller than in
every training step, and its test accuracy would measure that mismatch, not what it learned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..config import Config
from ..data import Dataset
from ..train import Curves, LoopProgress, train_steps
from ..models import Net


@dataclass(frozen=True)
class Noise:
    """The noise distribution: shift in U(-shift, shift), scale in U(1, scale)."""

    shift: float = 1.0
    scale: float = 2.0

    @property
    def mean_scale(self) -> float:
        """E[s] = (1 + scale) / 2: the factor applied in eval mode (the shift averages to 0)."""
        return (1.0 + self.scale) / 2.0

    def __post_init__(self) -> None:
        if not self.shift >= 0:
            raise ValueError(f"noise shift must be >= 0, got {self.shift}")
        if not self.scale >= 1:
            raise ValueError(f"noise scale must be >= 1 (a factor drawn from [1, scale]), got {self.scale}")


class _ShiftScale:
    """A forward hook replacing a BN layer's output by ``s * y + m`` in training mode and by
    ``E[s] * y`` in eval mode."""

    def __init__(self, noise: Noise, generator: torch.Generator):
        self.noise = noise
        self.generator = generator

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output * self.noise.mean_scale
        c = output.shape[1]
        shape = (1, c) + (1,) * (output.dim() - 2)
        m = (torch.rand(c, generator=self.generator) * 2 - 1) * self.noise.shift
        s = 1 + torch.rand(c, generator=self.generator) * (self.noise.scale - 1)
        return output * s.view(shape) + m.view(shape)


def add_noise(model: Net, noise: Noise, seed: int) -> list[RemovableHandle]:
    """Make every BN layer of ``model`` noisy (see the module docstring); returns the hook handles.

    The noise comes from a private generator seeded by ``seed``; with ``shift=0, scale=1`` the
    model computes exactly what it did before. Raises ``ValueError`` for a model without BN.
    """
    norms = model.batchnorms()
    if not norms:
        raise ValueError("noisy BatchNorm needs a network with BatchNorm layers (norm = batchnorm or reference)")
    generator = torch.Generator().manual_seed(seed)
    hook = _ShiftScale(noise, generator)
    return [m.register_forward_hook(hook) for _, m in norms]


def train_noisy(config: Config, noise: Noise, *, progress: LoopProgress | None = None,
                dataset: Dataset | None = None) -> Curves:
    """Train ``config`` (which must use BatchNorm) with noisy BN; same data, batches and initial
    weights as the clean run of :func:`bnviz.train.train_steps`."""
    curves, _ = train_steps(config, prepare=lambda model: add_noise(model, noise, config.seed + 2),
                            progress=progress, dataset=dataset)
    return curves
