"""Synchronized BatchNorm on CPU: statistics over the global batch of a ``torch.distributed`` job.

In data-parallel training every process holds a slice of the global batch ("per-device batch").
Plain BN normalizes each slice by its own statistics; synchronized BN all-reduces them, so every
process normalizes by the statistics of the whole global batch, as one BN on the concatenated
batch would. ``torch.nn.SyncBatchNorm`` does that on GPUs only (torch 2.13 raises "SyncBatchNorm
expected input tensor to be on GPU or XPU or privateuseone" for a CPU tensor); this module does
it with the gloo backend on CPU, the same way: per-channel sums, sums of squares and counts are
all-reduced in the forward pass, the two gradient sums in the backward pass.

Checked in ``tests/test_sync_bn.py`` against one BN over the concatenated batch (outputs, input
and parameter gradients, running statistics) and, with one process, against plain BN.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .norms import BatchNorm

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm"]


def _layout(x: Tensor) -> tuple[list[int], tuple[int, ...]]:
    return [0, *range(2, x.dim())], (1, x.shape[1]) + (1, ) * (x.dim() - 2)


class _SyncBatchNormFunction(torch.autograd.Function):
    r"""BN with the batch statistics of all processes of ``group``.

    Forward, per channel, with sums over this process's m_p values and :math:`\sum_p` the
    all-reduce: :math:`n = \sum_p m_p`, :math:`\mu = \sum_p \sum x / n`,
    :math:`\sigma^2 = \sum_p \sum x^2 / n - \mu^2` (biased, as BN normalizes; the sums are taken in
    float64 so the difference does not cancel). Backward, with :math:`g = \partial\ell/\partial y`:

    .. math::

        \frac{\partial \ell}{\partial x_i} = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}}
            \Big(g_i - \frac{1}{n} \sum_p \sum g - \hat{x}_i \frac{1}{n} \sum_p \sum g \hat{x}\Big),
        \qquad \frac{\partial \ell}{\partial \gamma} = \sum g \hat{x}, \quad
        \frac{\partial \ell}{\partial \beta} = \sum g \quad \text{(this process's values only)}

    The input gradient is that of the *sum* of all processes' losses; the parameter gradients are
    local, and DistributedDataParallel averages them over processes, as it averages every
    gradient: together, the gradient of the mean of the processes' losses (torch's convention).
    """

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, factor, eps, group):
        dims, stat_shape = _layout(input)
        local = torch.cat([input.sum(dims).double(), (input * input).sum(dims).double(),
                           torch.tensor([input.numel() // input.shape[1]], dtype=torch.float64)])
        dist.all_reduce(local, group=group)
        c = input.shape[1]
        n = local[-1]
        if n < 2:
            raise ValueError("synchronized BatchNorm needs at least 2 values per channel over all processes")
        mean64 = local[:c] / n
        var64 = (local[c:2 * c] / n - mean64 * mean64).clamp_min(0)
        if running_mean is not None:
            running_mean.mul_(1 - factor).add_(mean64.to(input.dtype), alpha=factor)
            running_var.mul_(1 - factor).add_((var64 * n / (n - 1)).to(input.dtype), alpha=factor)
        mean, var = mean64.to(input.dtype).view(stat_shape), var64.to(input.dtype).view(stat_shape)
        inv_std = torch.rsqrt(var + eps)
        x_hat = (input - mean) * inv_std
        out = x_hat if weight is None else x_hat * weight.view(stat_shape) + bias.view(stat_shape)
        ctx.save_for_backward(x_hat, weight, inv_std)
        ctx.count, ctx.group = float(n), group
        return out

    @staticmethod
    def backward(ctx, grad_output):
        x_hat, weight, inv_std = ctx.saved_tensors
        dims, stat_shape = _layout(grad_output)
        c = grad_output.shape[1]
        sum_dy = grad_output.sum(dims)
        sum_dy_xhat = (grad_output * x_hat).sum(dims)
        grad_weight = grad_bias = None
        if weight is not None:
            grad_weight, grad_bias = sum_dy_xhat.clone(), sum_dy.clone()
        grad_input = None
        if ctx.needs_input_grad[0]:
            sums = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(sums, group=ctx.group)
            mean_dy = (sums[:c] / ctx.count).view(stat_shape)
            mean_dy_xhat = (sums[c:] / ctx.count).view(stat_shape)
            scale = inv_std if weight is None else weight.view(stat_shape) * inv_std
            grad_input = scale * (grad_output - mean_dy - x_hat * mean_dy_xhat)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


class SyncBatchNorm(BatchNorm):
    r"""BatchNorm whose training-mode statistics are those of the global batch of all processes
    in ``process_group`` (default: the whole job), on CPU.

    The arguments, parameters, buffers and eval mode of :class:`bnviz.norms.BatchNorm`. In
    training mode with a process group initialized, every process normalizes with the mean and
    biased variance of all processes' values of each channel (see :class:`_SyncBatchNormFunction`)
    and updates its running statistics with them (the running variance unbiased over the global
    count), so every process keeps the same running statistics. Without a process group it is
    plain BN. Every process must call its forward (and backward) in the same order: each is a
    collective operation.

    Shape: (N, C), (N, C, L) or (N, C, H, W); N may differ between processes.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 process_group: dist.ProcessGroup | None = None, **kwargs) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, **kwargs)
        self.process_group = process_group

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        self._check_input(input)
        factor = 0.0
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return _SyncBatchNormFunction.apply(input, self.weight, self.bias,
                                            self.running_mean if self.track_running_stats else None,
                                            self.running_var if self.track_running_stats else None,
                                            factor, self.eps, self.process_group)


def convert_sync_batchnorm(module: nn.Module, process_group: dist.ProcessGroup | None = None) -> nn.Module:
    """``module`` with every BatchNorm (torch's or bnviz's) replaced by a :class:`SyncBatchNorm`
    holding the same parameters and buffers (the parameters themselves, not copies), as
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does. Call it before building the optimizer
    and wrapping the model in DistributedDataParallel."""
    if isinstance(module, (_BatchNorm, BatchNorm)) and not isinstance(module, SyncBatchNorm):
        sync = SyncBatchNorm(module.num_features, module.eps, module.momentum, process_group,
                             affine=module.affine, track_running_stats=module.track_running_stats)
        if module.affine:
            sync.weight, sync.bias = module.weight, module.bias
        if module.track_running_stats:
            sync.running_mean, sync.running_var = module.running_mean, module.running_var
            sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, process_group))
    return module
