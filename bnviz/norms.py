"""Normalization layers: a reference BatchNorm written out by hand, and a factory for the others.

:class:`BatchNorm` is the layer the app shows step by step. It is built from elementary tensor
operations (a mean, a variance, a reciprocal square root, a multiply and an add) so a reader can
follow every number, and it is checked against ``torch.nn.BatchNorm1d``/``BatchNorm2d`` in
``tests/test_norms.py``: same outputs, gradients, running statistics and ``state_dict`` keys.

:func:`make_norm` builds the layer a :class:`bnviz.config.Config` names (``config.norm``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["BatchNorm", "NORM_KINDS", "make_norm", "is_batchnorm", "groupnorm_groups", "DyT"]

NORM_KINDS = ("batchnorm", "reference", "layernorm", "groupnorm", "none")
# Values per group of a GroupNorm over flat (N, C) features: 64 units give 4 groups of 16.
FLAT_MIN_PER_GROUP = 16

# torch's own wording; kept inside our message so code that matches on either still works.
_TORCH_BATCH_OF_ONE = "Expected more than 1 value per channel when training"


class BatchNorm(nn.Module):
    r"""Applies Batch Normalization over a 2D, 3D or 4D input: a reference implementation.

    Method described in the paper
    `Batch Normalization: Accelerating Deep Network Training by Reducing
    Internal Covariate Shift <https://arxiv.org/abs/1502.03167>`__ (Ioffe & Szegedy, 2015).
    A drop-in replacement for :class:`torch.nn.BatchNorm1d` and :class:`torch.nn.BatchNorm2d`
    (same arguments, same parameter and buffer names, interchangeable ``state_dict``), written
    with elementary tensor operations instead of ``F.batch_norm``.

    For each channel :math:`c`, the mini-batch :math:`\mathcal{B} = \{x_{1 \ldots m}\}` is every
    value of that channel in the batch: :math:`m = N` for an :math:`(N, C)` input,
    :math:`m = N L` for :math:`(N, C, L)` and :math:`m = N H W` for :math:`(N, C, H, W)`.
    Algorithm 1 of the paper, applied to each channel in training mode:

    .. math::

        \mu_\mathcal{B} &\leftarrow \frac{1}{m} \sum_{i=1}^m x_i
            && \text{mini-batch mean} \\
        \sigma^2_\mathcal{B} &\leftarrow \frac{1}{m} \sum_{i=1}^m (x_i - \mu_\mathcal{B})^2
            && \text{mini-batch variance} \\
        \hat{x}_i &\leftarrow \frac{x_i - \mu_\mathcal{B}}{\sqrt{\sigma^2_\mathcal{B} + \epsilon}}
            && \text{normalize} \\
        y_i &\leftarrow \gamma \hat{x}_i + \beta \equiv \mathrm{BN}_{\gamma,\beta}(x_i)
            && \text{scale and shift}

    :math:`\gamma` (``weight``) and :math:`\beta` (``bias``) are learnable vectors of size `C`,
    initialized to 1 and 0, so at initialization the layer outputs :math:`\hat{x}` itself.
    The variance used to normalize is the biased estimator (divide by :math:`m`, as in the
    paper and as ``torch.var(input, correction=0)``).

    During training the layer also keeps running estimates of the mean and variance, which it
    uses instead of the batch statistics in evaluation mode (``model.eval()``), so a prediction
    for one sample does not depend on the other samples in its batch:

    .. math::

        \text{running\_mean} &\leftarrow (1 - \text{momentum}) \times \text{running\_mean}
            + \text{momentum} \times \mu_\mathcal{B} \\
        \text{running\_var} &\leftarrow (1 - \text{momentum}) \times \text{running\_var}
            + \text{momentum} \times \tfrac{m}{m - 1} \sigma^2_\mathcal{B}

    The running variance uses the unbiased estimator (:math:`\frac{m}{m-1}\sigma^2_\mathcal{B}`,
    as ``torch.var(input, correction=1)``), like the paper's inference step and like torch.
    With ``momentum=None`` the factor is :math:`1 / t` after :math:`t` training batches, which
    makes the running statistics the plain (cumulative) average over all batches seen.

    .. note::
        This :attr:`momentum` is not the momentum of an optimizer: it is the weight of the
        *new* batch in the moving average, so a larger value forgets the past faster.

    If :attr:`track_running_stats` is ``False`` the layer keeps no running estimates and uses
    batch statistics in both training and evaluation mode.

    The backward pass is the paper's closed form (section 3) rather than autograd's walk
    through every step, which keeps the layer within 2x of torch's fused kernel; second
    derivatives (``create_graph=True``) are supported too.

    Args:
        num_features: number of features or channels :math:`C` of the input
        eps: a value added to the variance before the square root, so a channel whose values
            are all equal (zero variance) is divided by :math:`\sqrt{\epsilon}`, not by zero.
            Default: 1e-5
        momentum: the weight of the current batch in the running_mean and running_var
            update. Can be set to ``None`` for a cumulative moving average
            (i.e. simple average). Default: 0.1
        affine: a boolean value that when set to ``True``, this module has learnable
            affine parameters :math:`\gamma` and :math:`\beta`. Default: ``True``
        track_running_stats: a boolean value that when set to ``True``, this module tracks
            the running mean and variance, and when set to ``False``, this module does not
            track such statistics, and initializes the buffers :attr:`running_mean`,
            :attr:`running_var` and :attr:`num_batches_tracked` as ``None``; the module then
            always uses batch statistics, in both training and eval modes. Default: ``True``
        device, dtype: where and in which floating point type to create the parameters and
            buffers, as for every torch module. Default: torch's defaults

    Shape:
        - Input: :math:`(N, C)`, :math:`(N, C, L)` or :math:`(N, C, H, W)`, where :math:`N`
          is the batch size, :math:`C` the number of features or channels, :math:`L` a
          sequence length and :math:`H, W` an image's height and width
        - Output: same shape as the input

    Attributes:
        weight: :math:`\gamma`, shape :math:`(C)`; ``None`` when ``affine=False``
        bias: :math:`\beta`, shape :math:`(C)`; ``None`` when ``affine=False``
        running_mean, running_var: shape :math:`(C)`; ``None`` when ``track_running_stats=False``
        num_batches_tracked: 0-dim long tensor counting training batches;
            ``None`` when ``track_running_stats=False``

    Examples::

        >>> m = BatchNorm(100)
        >>> output = m(torch.randn(20, 100))
        >>> m = BatchNorm(16, affine=False)
        >>> output = m(torch.randn(8, 16, 28, 28))
        >>> m.load_state_dict(nn.BatchNorm2d(16, affine=False).state_dict())
        <All keys matched successfully>
    """

    # Version 2 of torch's _NormBase added num_batches_tracked; sharing the number keeps our
    # state_dict metadata meaning the same thing as torch's.
    _version = 2
    __constants__ = ["track_running_stats", "momentum", "eps", "num_features", "affine"]
    num_features: int
    eps: float
    momentum: float | None
    affine: bool
    track_running_stats: bool

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            self.bias = nn.Parameter(torch.empty(num_features, **factory))
        else:
            # Registered as None (not just absent) so the names exist, as in torch.
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            # A long, as in torch: the count stays exact and the state_dicts match key for key
            # and dtype for dtype.
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            # None buffers are left out of state_dict, exactly as torch leaves them out.
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            "{num_features}, eps={eps}, momentum={momentum}, affine={affine}, "
            "track_running_stats={track_running_stats}".format(**self.__dict__)
        )

    def _check_input(self, input: Tensor) -> None:
        if input.dim() not in (2, 3, 4):
            raise ValueError(
                f"BatchNorm expects a 2D (N, C), 3D (N, C, L) or 4D (N, C, H, W) input, "
                f"got {input.dim()}D input of shape {tuple(input.shape)}"
            )
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm was built for {self.num_features} channels (num_features), but "
                f"the input of shape {tuple(input.shape)} has {input.shape[1]} channels in "
                f"dimension 1"
            )

    def _batch_of_one_message(self, input: Tensor) -> str:
        if self.track_running_stats and self.running_mean is not None:
            eval_hint = (
                "call model.eval() to normalize with the running statistics instead (that "
                "is how a trained network predicts one sample at a time)"
            )
        else:
            eval_hint = (
                "note that this layer has track_running_stats=False, so it has no running "
                "statistics and uses batch statistics even in eval mode"
            )
        return (
            f"BatchNorm cannot normalize a batch with only one value per channel "
            f"(input shape {tuple(input.shape)}): the variance of a single value is 0 and "
            f"x - mean is 0, so every output would just be beta (the bias), whatever the "
            f"input, and no gradient would reach the layers below. Use a batch of 2 or more; "
            f"{eval_hint}; or use a normalization that works within each sample "
            f"(LayerNorm or GroupNorm). "
            f"({_TORCH_BATCH_OF_ONE}, got input size {list(input.shape)})"
        )

    def forward(self, input: Tensor) -> Tensor:
        self._check_input(input)

        # Same decisions as torch's _BatchNorm.forward, so the two layers can be swapped:
        # batch statistics when training, or in eval mode when there are no running ones;
        # running statistics updated only when training and tracking.
        if self.training:
            use_batch_stats = True
        else:
            use_batch_stats = self.running_mean is None and self.running_var is None
        if use_batch_stats:
            # Checked before anything changes, so a rejected batch leaves the layer as it was.
            values_per_channel = input.numel() // input.shape[1] if input.shape[1] else 0
            if values_per_channel == 1:
                raise ValueError(self._batch_of_one_message(input))
            if self.eps <= 0:
                raise ValueError(
                    f"BatchNorm eps must be positive when using batch statistics (a channel "
                    f"with equal values has variance 0 and would be divided by 0), got {self.eps}"
                )

        factor = 0.0
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                # Weight 1/t for batch t makes the running value the plain average of all t.
                factor = 1.0 / float(self.num_batches_tracked)
            else:
                factor = self.momentum
        # Passed only when they are read (eval) or written (training while tracking).
        use_buffers = not self.training or self.track_running_stats
        return _BatchNormFunction.apply(
            input,
            self.weight,
            self.bias,
            self.running_mean if use_buffers else None,
            self.running_var if use_buffers else None,
            use_batch_stats,
            factor,
            self.eps,
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
        error_msgs,
    ) -> None:
        # Checkpoints saved before torch added num_batches_tracked (version < 2) lack it;
        # torch fills in 0 rather than failing a strict load, and so do we.
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and self.track_running_stats:
            key = prefix + "num_batches_tracked"
            if key not in state_dict:
                state_dict[key] = (
                    self.num_batches_tracked
                    if self.num_batches_tracked is not None
                    else torch.tensor(0, dtype=torch.long)
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
            error_msgs,
        )


def _stat_layout(input: Tensor) -> tuple[list[int], tuple[int, ...]]:
    """The axes statistics are reduced over, and the shape that broadcasts a (C,) vector."""
    # Statistics are per channel (axis 1): reduce over the batch and every spatial axis.
    reduce_dims = [0, *range(2, input.dim())]
    # (1, C, 1, ...) lines a per-channel vector up with axis 1 of the input.
    stat_shape = (1, input.shape[1]) + (1,) * (input.dim() - 2)
    return reduce_dims, stat_shape


def _batch_norm_composite(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor | None,
    var: Tensor | None,
    eps: float,
) -> Tensor:
    """Algorithm 1 line by line, differentiated by autograd (``mean=var=None``: batch stats).

    The definition that :class:`_BatchNormFunction` computes faster; it is only run when
    someone differentiates the gradients themselves (double backward), where autograd needs
    every step of the forward pass.
    """
    reduce_dims, stat_shape = _stat_layout(input)
    if mean is None or var is None:
        mean = input.mean(reduce_dims)                                # mu_B
        var = ((input - mean.view(stat_shape)) ** 2).mean(reduce_dims)  # sigma^2_B
    x_hat = (input - mean.view(stat_shape)) / torch.sqrt(var.view(stat_shape) + eps)
    y = x_hat
    if weight is not None:
        y = y * weight.view(stat_shape)                               # gamma * x_hat
    if bias is not None:
        y = y + bias.view(stat_shape)                                 # + beta
    return y


class _BatchNormFunction(torch.autograd.Function):
    r"""Normalize, scale and shift, with the backward pass written out as in the paper.

    Letting autograd differentiate the forward pass op by op walks the input a dozen times
    and made the layer ~5x slower than torch's fused C++ kernel; the closed form of section 3
    of Ioffe & Szegedy (2015) needs five passes and brings it within 2x. With batch statistics, for each
    channel (sums over the m values of the channel):

    .. math::

        \frac{\partial \ell}{\partial \hat{x}_i} &= \frac{\partial \ell}{\partial y_i} \gamma \\
        \frac{\partial \ell}{\partial \sigma^2_\mathcal{B}} &= \sum_i
            \frac{\partial \ell}{\partial \hat{x}_i} (x_i - \mu_\mathcal{B})
            \cdot \tfrac{-1}{2} (\sigma^2_\mathcal{B} + \epsilon)^{-3/2} \\
        \frac{\partial \ell}{\partial \mu_\mathcal{B}} &= \sum_i
            \frac{\partial \ell}{\partial \hat{x}_i} \frac{-1}{\sqrt{\sigma^2_\mathcal{B} + \epsilon}}
            + \frac{\partial \ell}{\partial \sigma^2_\mathcal{B}}
            \frac{\sum_i -2 (x_i - \mu_\mathcal{B})}{m} \\
        \frac{\partial \ell}{\partial x_i} &= \frac{\partial \ell}{\partial \hat{x}_i}
            \frac{1}{\sqrt{\sigma^2_\mathcal{B} + \epsilon}}
            + \frac{\partial \ell}{\partial \sigma^2_\mathcal{B}} \frac{2 (x_i - \mu_\mathcal{B})}{m}
            + \frac{\partial \ell}{\partial \mu_\mathcal{B}} \frac{1}{m} \\
        \frac{\partial \ell}{\partial \gamma} &= \sum_i \frac{\partial \ell}{\partial y_i} \hat{x}_i,
        \qquad
        \frac{\partial \ell}{\partial \beta} = \sum_i \frac{\partial \ell}{\partial y_i}

    With running statistics (eval mode) :math:`\mu` and :math:`\sigma^2` are constants and
    only the first term of :math:`\partial \ell / \partial x_i` remains.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, use_batch_stats, factor, eps):
        # The arguments of F.batch_norm: with batch statistics and running buffers given, the
        # buffers are updated in place, with weight ``factor`` for this batch.
        reduce_dims, stat_shape = _stat_layout(input)
        # Per-channel vectors are kept in the (1, C, 1, ...) shape throughout, so they
        # broadcast against the input without a reshape per use.
        if use_batch_stats:
            # Two passes (mean, then the mean square of x - mean) rather than torch.var_mean:
            # on CPU (torch 2.13) var_mean over these axes is ~50x slower than mean, and
            # subtracting the mean first keeps the variance accurate when the mean is large
            # next to the spread.
            mean = input.mean(reduce_dims, keepdim=True)                  # mu_B
            centered = input - mean
            # `scratch` is reused for the output below: each fresh input-sized tensor costs
            # an allocation that takes about as long as the arithmetic.
            scratch = torch.mul(centered, centered)
            var = scratch.mean(reduce_dims, keepdim=True)                 # sigma^2_B (biased)
            if running_mean is not None:
                # Function.forward runs with autograd off, so this in-place bookkeeping stays
                # out of the graph (it is what torch.no_grad() would give).
                m = input.numel() // input.shape[1]
                running_mean.mul_(1 - factor).add_(mean.view(-1), alpha=factor)
                # Unbiased (m / (m-1)): the running variance estimates the variance of the
                # whole data distribution, not of this one batch.
                running_var.mul_(1 - factor).add_(var.view(-1), alpha=factor * m / (m - 1))
            ctx.running = None
        else:
            mean, var = running_mean.view(stat_shape), running_var.view(stat_shape)
            centered = input - mean
            scratch = torch.empty_like(centered)
            # Copies for the double-backward path: a later training step updates the buffers
            # in place before this graph's backward may run.
            ctx.running = (running_mean.clone(), running_var.clone())
        inv_std = torch.rsqrt(var + eps)
        # gamma * x_hat + beta = (x - mu) * (gamma / sqrt(var + eps)) + beta: folding gamma into
        # the per-channel factor makes the scale and shift one pass over the tensor.
        scale = inv_std if weight is None else weight.view(stat_shape) * inv_std
        if bias is None:
            output = torch.mul(centered, scale, out=scratch)
        else:
            output = torch.addcmul(bias.view(stat_shape), centered, scale, out=scratch)
        ctx.save_for_backward(input, weight, bias, centered, inv_std)
        ctx.eps = eps
        ctx.use_batch_stats = use_batch_stats
        return output

    @staticmethod
    def backward(ctx, grad_output):
        input, weight, bias, centered, inv_std = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            # create_graph=True: the caller will differentiate these gradients, so they must
            # be built from autograd ops on the inputs; replay Algorithm 1 and let autograd do it.
            return _BatchNormFunction._composite_backward(ctx, grad_output)

        reduce_dims, stat_shape = _stat_layout(input)
        m = input.numel() // input.shape[1]
        batch_terms = need_input and ctx.use_batch_stats
        grad_input = grad_weight = grad_bias = None

        # dl/dbeta = sum_i dl/dy_i
        sum_dy = grad_output.sum(reduce_dims, keepdim=True) if need_bias or batch_terms else None
        scratch = None
        if need_weight or batch_terms:
            # dl/dgamma = sum_i dl/dy_i x_hat_i = inv_std * sum_i dl/dy_i (x_i - mu)
            scratch = torch.mul(grad_output, centered)
            grad_gamma = scratch.sum(reduce_dims, keepdim=True).mul_(inv_std)
        if need_input:
            # dl/dx_hat * 1/sqrt(var + eps), with dl/dx_hat = dl/dy * gamma
            direct = inv_std if weight is None else weight.view(stat_shape) * inv_std
            if batch_terms:
                # dl/dsigma^2 = -1/2 gamma (var + eps)^(-3/2) sum_i dl/dy_i (x_i - mu)
                grad_var = (direct * inv_std).mul_(grad_gamma).mul_(-0.5)
                # dl/dmu / m; the paper's second term of dl/dmu has sum_i (x_i - mu) = 0: dropped.
                grad_mean_over_m = (direct * sum_dy).div_(-m)
                grad_input = torch.addcmul(grad_mean_over_m, grad_output, direct, out=scratch)
                grad_input.addcmul_(centered, grad_var, value=2.0 / m)
            else:
                grad_input = grad_output * direct
        if need_weight:
            grad_weight = grad_gamma.view(-1)
        if need_bias:
            grad_bias = sum_dy.view(-1)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None

    @staticmethod
    def _composite_backward(ctx, grad_output):
        input, weight, bias, _, _ = ctx.saved_tensors
        mean, var = ctx.running if ctx.running is not None else (None, None)
        with torch.enable_grad():
            # Saved inputs that do not require grad (e.g. raw data) still take part as constants.
            output = _batch_norm_composite(input, weight, bias, mean, var, ctx.eps)
        wanted = [
            t for t, need in zip((input, weight, bias), ctx.needs_input_grad[:3]) if need
        ]
        grads = iter(torch.autograd.grad(output, wanted, grad_output, create_graph=True))
        result = [next(grads) if need else None for need in ctx.needs_input_grad[:3]]
        return (*result, None, None, None, None, None)


def groupnorm_groups(num_channels: int, min_per_group: int = 2) -> int:
    """The group count :func:`make_norm` uses for GroupNorm over ``num_channels`` channels.

    The largest of 32, 16, 8, 4, 2, 1 that divides ``num_channels`` and leaves at least
    ``min_per_group`` channels per group; with no such choice it is 1.
    """
    for groups in (32, 16, 8, 4, 2, 1):
        if num_channels % groups == 0 and num_channels // groups >= min_per_group:
            return groups
    # A group of one channel normalizes each channel on its own (InstanceNorm); it is the
    # only option left for a single channel.
    return 1


def make_norm(
    kind: str,
    num_features: int,
    *,
    spatial: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    affine: bool = True,
) -> nn.Module | None:
    """The normalization layer named ``kind`` for ``num_features`` features or channels.

    ``spatial=False`` is for flat (N, C) activations (an MLP), ``spatial=True`` for
    (N, C, H, W) feature maps (a CNN). ``momentum`` only matters to the two BatchNorms (the
    other layers keep no running statistics); ``eps`` is passed to every layer, and ``affine``
    (learn gamma and beta) too (LayerNorm calls it ``elementwise_affine``).

    - ``"batchnorm"``: ``torch.nn.BatchNorm1d``, or ``BatchNorm2d`` when spatial
    - ``"reference"``: this module's :class:`BatchNorm`
    - ``"layernorm"``: ``nn.LayerNorm(num_features)``, or ``nn.GroupNorm(1, C)`` when spatial
    - ``"groupnorm"``: ``nn.GroupNorm`` with :func:`groupnorm_groups` groups
    - ``"none"``: ``None`` (the caller adds no layer)
    """
    if kind == "batchnorm":
        cls = nn.BatchNorm2d if spatial else nn.BatchNorm1d
        return cls(num_features, eps=eps, momentum=momentum, affine=affine)
    if kind == "reference":
        return BatchNorm(num_features, eps=eps, momentum=momentum, affine=affine)
    if kind == "layernorm":
        if spatial:
            # LayerNorm normalizes each sample over all its features; for a feature map that
            # is (C, H, W). nn.LayerNorm([C, H, W]) would need H and W when the layer is
            # built and would learn a gamma/beta per pixel; GroupNorm with one group takes
            # the same statistics (per sample, over C, H, W) for any image size, with a
            # gamma/beta per channel like BatchNorm, so the comparison is fair.
            return nn.GroupNorm(1, num_features, eps=eps, affine=affine)
        return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)
    if kind == "groupnorm":
        # GroupNorm accepts (N, C) as well as (N, C, H, W). A flat feature is one value per
        # sample, so a group of 2 features would normalize every pair to exactly -1 and +1 and
        # the network could not learn; flat groups keep FLAT_MIN_PER_GROUP values each.
        min_per_group = 2 if spatial else FLAT_MIN_PER_GROUP
        return nn.GroupNorm(groupnorm_groups(num_features, min_per_group), num_features, eps=eps, affine=affine)
    if kind == "none":
        return None
    raise ValueError(
        f"unknown normalization {kind!r}; choose one of: {', '.join(NORM_KINDS)}"
    )


def is_batchnorm(module: object) -> bool:
    """True for torch's BatchNorm layers (any ``_BatchNorm`` subclass) and our :class:`BatchNorm`."""
    return isinstance(module, (_BatchNorm, BatchNorm))


class DyT(nn.Module):
    r"""Dynamic Tanh (Zhu, Chen, He, LeCun & Liu, 2025, *Transformers without Normalization*): an
    element-wise stand-in for LayerNorm in transformers,

    .. math::

        \mathrm{DyT}(x) = \gamma \odot \tanh(\alpha x) + \beta

    with one learned scalar :math:`\alpha` (initialized to ``alpha_init`` = 0.5) and per-feature
    :math:`\gamma` (``weight``, ones) and :math:`\beta` (``bias``, zeros) of size ``num_features``
    over the last axis. It computes no statistic: the S-shape of ``tanh`` imitates what LayerNorm
    does to the extreme values of a token (squashes them), without looking at the other values.

    Shape: input ``(*, num_features)``, output the same.
    """

    def __init__(self, num_features: int, alpha_init: float = 0.5):
        super().__init__()
        self.num_features = num_features
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.alpha * x) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.num_features}, alpha={self.alpha.item():g}"
