"""Remedies for BatchNorm at small or non-i.i.d. batches, from elementary tensor operations.

* :class:`BatchRenorm` (Ioffe, "Batch Renormalization", NeurIPS 2017): BN's batch statistics,
  corrected towards the running ones by a per-channel factor ``r`` and shift ``d`` that carry no
  gradient, so training-mode outputs move towards what eval mode will compute;
* :class:`GhostBatchNorm` (Hoffer, Hubara & Soudry, "Train longer, generalize better", NeurIPS
  2017): statistics over virtual sub-batches ("ghost batches") of a fixed size;
* :class:`WSLinear` / :class:`WSConv2d` (Qiao et al., "Micro-Batch Training with Batch-Channel
  Normalization and Weight Standardization", 2019): weights standardized per output unit before
  use, meant to be followed by GroupNorm, which needs no batch at all.

Both BN variants subclass the reference :class:`bnviz.norms.BatchNorm`: same arguments, buffers,
``state_dict`` and eval mode (running statistics), so every tool that knows BN (the recorder,
``Net.batchnorms``, precise BN) knows them. ``tests/test_small_batch_norms.py`` checks them
against ``torch.nn.BatchNorm1d/2d`` where they must coincide (Batch Renorm with r = 1, d = 0; one
ghost batch) and Weight Standardization against numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norms import BatchNorm

__all__ = ["RenormSchedule", "BatchRenorm", "GhostBatchNorm", "standardize_weight", "WSLinear", "WSConv2d"]


def _layout(x: Tensor) -> tuple[list[int], tuple[int, ...]]:
    """Axes a per-channel statistic is reduced over (all but axis 1), and the (1, C, 1, ...) shape
    that lines a (C,) vector up with axis 1."""
    return [0, *range(2, x.dim())], (1, x.shape[1]) + (1, ) * (x.dim() - 2)


def _moments(x: Tensor) -> tuple[Tensor, Tensor, int]:
    """Per-channel mean and biased variance, kept in the (1, C, 1, ...) shape, and the count m."""
    dims, _ = _layout(x)
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    return mean, var, x.numel() // x.shape[1]


@dataclass(frozen=True)
class RenormSchedule:
    r"""How Batch Renorm's clipping limits are relaxed with training.

    For the first ``warmup`` training batches :math:`r_{max} = 1, d_{max} = 0` (plain BN, while
    the running statistics are still poor); then both grow linearly over ``ramp`` batches to
    ``r_max`` and ``d_max``. Ioffe (2017) used 5,000 warm-up steps and ramps of 40,000 (r) and
    25,000 (d) steps on ImageNet, to 3 and 5; here one ramp, in a few hundred steps.
    """

    r_max: float = 3.0
    d_max: float = 5.0
    warmup: int = 50
    ramp: int = 100

    def limits(self, batches_seen: int) -> tuple[float, float]:
        """(r_max, d_max) for the training batch that follows ``batches_seen`` earlier ones."""
        progress = min(max((batches_seen - self.warmup) / max(self.ramp, 1), 0.0), 1.0)
        return 1.0 + (self.r_max - 1.0) * progress, self.d_max * progress


class BatchRenorm(BatchNorm):
    r"""Batch Renormalization over a 2D, 3D or 4D input (Ioffe 2017, Algorithm 1).

    In training mode, per channel, with :math:`\mu_\mathcal{B}, \sigma_\mathcal{B} =
    \sqrt{\sigma^2_\mathcal{B} + \epsilon}` the batch mean and standard deviation and
    :math:`\mu, \sigma = \sqrt{\text{running\_var} + \epsilon}` the running ones *before* this
    batch's update:

    .. math::

        r &= \operatorname{stop\_gradient}\Big(\operatorname{clip}_{[1/r_{max},\, r_{max}]}
             \frac{\sigma_\mathcal{B}}{\sigma}\Big), \qquad
        d = \operatorname{stop\_gradient}\Big(\operatorname{clip}_{[-d_{max},\, d_{max}]}
             \frac{\mu_\mathcal{B} - \mu}{\sigma}\Big) \\
        \hat{x}_i &= \frac{x_i - \mu_\mathcal{B}}{\sigma_\mathcal{B}} \, r + d, \qquad
        y_i = \gamma \hat{x}_i + \beta

    Unclipped, :math:`\hat{x}_i = (x_i - \mu) / \sigma`: exactly what eval mode computes, while the
    gradient still flows through the batch statistics as in BN. With :math:`r_{max} = 1` and
    :math:`d_{max} = 0` (the warm-up of ``schedule``) the layer is BatchNorm. The running
    statistics are updated as BN updates them (momentum, unbiased running variance); eval mode is
    BN's. The limits come from ``schedule`` and ``num_batches_tracked``, so they need no caller.

    Shape: as :class:`bnviz.norms.BatchNorm`. ``last_r`` / ``last_d`` hold the (C,) factors of
    the latest training batch (for figures; no gradient).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 schedule: RenormSchedule = RenormSchedule(), **kwargs) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, **kwargs)
        self.schedule = schedule
        self.last_r: Tensor | None = None
        self.last_d: Tensor | None = None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, schedule={self.schedule}"

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and self.track_running_stats):
            return super().forward(input)
        self._check_input(input)
        if input.numel() // input.shape[1] == 1:
            raise ValueError(self._batch_of_one_message(input))
        _, stat_shape = _layout(input)
        mean, var, m = _moments(input)
        std = torch.sqrt(var + self.eps)
        r_max, d_max = self.schedule.limits(int(self.num_batches_tracked))
        with torch.no_grad():  # r and d are constants to the gradient (the stop_gradient above)
            running_std = torch.sqrt(self.running_var + self.eps).view(stat_shape)
            r = (std / running_std).clamp(1.0 / r_max, r_max)
            d = ((mean - self.running_mean.view(stat_shape)) / running_std).clamp(-d_max, d_max)
            self.last_r, self.last_d = r.view(-1).clone(), d.view(-1).clone()
            _update_running(self, mean.view(-1), var.view(-1) * m / (m - 1))
        x_hat = (input - mean) / std * r + d
        return _affine(self, x_hat, stat_shape)


class GhostBatchNorm(BatchNorm):
    r"""Ghost Batch Normalization (Hoffer et al. 2017): BN whose training-mode statistics come
    from consecutive sub-batches of ``ghost_size`` samples, each normalized by its own.

    A batch of N rows is cut into ``ceil(N / ghost_size)`` ghost batches in order (a last one of
    a single sample joins the one before: one value has no variance). Each is normalized as BN
    normalizes a batch. The running statistics are updated once per batch, with the average over
    ghost batches of their means and of their unbiased variances. With ``ghost_size >= N`` this
    is BatchNorm. Eval mode is BN's. Shape: as :class:`bnviz.norms.BatchNorm`.
    """

    def __init__(self, num_features: int, ghost_size: int = 8, eps: float = 1e-5,
                 momentum: float | None = 0.1, **kwargs) -> None:
        if ghost_size < 2:
            raise ValueError(f"a ghost batch needs at least 2 samples, got ghost_size={ghost_size}")
        super().__init__(num_features, eps=eps, momentum=momentum, **kwargs)
        self.ghost_size = ghost_size

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_size={self.ghost_size}"

    def ghost_batches(self, n: int) -> list[int]:
        """Sizes of the ghost batches a batch of ``n`` rows is cut into."""
        sizes = [self.ghost_size] * (n // self.ghost_size) + ([n % self.ghost_size] if n % self.ghost_size else [])
        if len(sizes) > 1 and sizes[-1] == 1:
            sizes[-2:] = [sizes[-2] + 1]
        return sizes

    def forward(self, input: Tensor) -> Tensor:
        if not self.training:
            return super().forward(input)
        self._check_input(input)
        if input.numel() // input.shape[1] == 1:
            raise ValueError(self._batch_of_one_message(input))
        _, stat_shape = _layout(input)
        parts, means, variances = [], [], []
        for ghost in torch.split(input, self.ghost_batches(input.shape[0])):
            mean, var, m = _moments(ghost)
            parts.append((ghost - mean) / torch.sqrt(var + self.eps))
            means.append(mean.detach().view(-1))
            variances.append(var.detach().view(-1) * m / (m - 1))
        if self.track_running_stats:
            with torch.no_grad():
                _update_running(self, torch.stack(means).mean(0), torch.stack(variances).mean(0))
        return _affine(self, torch.cat(parts), stat_shape)


def _update_running(module: BatchNorm, mean: Tensor, unbiased_var: Tensor) -> None:
    """BN's running-statistics update: weight ``momentum`` (or 1/t for ``momentum=None``) on the
    new values, the batch counter advanced."""
    module.num_batches_tracked.add_(1)
    factor = 1.0 / float(module.num_batches_tracked) if module.momentum is None else module.momentum
    module.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
    module.running_var.mul_(1 - factor).add_(unbiased_var, alpha=factor)


def _affine(module: BatchNorm, x_hat: Tensor, stat_shape: tuple[int, ...]) -> Tensor:
    if module.weight is None:
        return x_hat
    return x_hat * module.weight.view(stat_shape) + module.bias.view(stat_shape)


# ----------------------------------------------------------------------------------------------
# Weight Standardization


def standardize_weight(weight: Tensor, eps: float = 1e-5) -> Tensor:
    r"""Each output unit's weights standardized over its fan-in (Qiao et al. 2019, eq. 5):

    .. math:: \hat{W}_{i,\cdot} = \frac{W_{i,\cdot} - \mu_i}{\sqrt{\sigma_i^2 + \epsilon}}, \quad
              \mu_i = \tfrac{1}{I} \sum_j W_{ij}, \quad \sigma_i^2 = \tfrac{1}{I} \sum_j (W_{ij} - \mu_i)^2

    ``weight``: (out, in) for a linear layer, (out, in, kh, kw) for a convolution; I is everything
    but axis 0. Differentiable: the gradient reaches ``weight`` through the standardization.
    """
    flat = weight.reshape(weight.shape[0], -1)
    mean = flat.mean(1, keepdim=True)
    var = ((flat - mean) ** 2).mean(1, keepdim=True)
    return ((flat - mean) / torch.sqrt(var + eps)).reshape(weight.shape)


class WSLinear(nn.Linear):
    """``nn.Linear`` that multiplies by :func:`standardize_weight` of its weight (same parameters
    and ``state_dict`` as ``nn.Linear``)."""

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, standardize_weight(self.weight), self.bias)


class WSConv2d(nn.Conv2d):
    """``nn.Conv2d`` that convolves with :func:`standardize_weight` of its weight."""

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, standardize_weight(self.weight), self.bias)
