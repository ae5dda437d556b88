"""Which values are normalized together: BatchNorm, LayerNorm, InstanceNorm and GroupNorm on one tensor.

Wu & He (2018), *Group Normalization*, Figure 2: on a feature map ``x`` of shape (N, C, H, W), each
method computes a mean and a variance over a set S of entries and normalizes every entry of S by
them. For the entry ``(n, c, h, w)``:

============  ================================================  ==============
method        S (the entries normalized with it)                |S|
============  ================================================  ==============
BatchNorm     every sample, every position, channel ``c``        N * H * W
LayerNorm     sample ``n``, every channel and position           C * H * W
InstanceNorm  sample ``n``, channel ``c``, every position        H * W
GroupNorm     sample ``n``, the C/G channels of ``c``'s group,    (C / G) * H * W
              every position
============  ================================================  ==============

    mu = mean of S,  sigma^2 = mean of (S - mu)^2 (biased),  x_hat = (x - mu) / sqrt(sigma^2 + eps)

(before each method's learned gamma and beta, which do not change which values share statistics).
The tensor is a real one: the input of a BN layer of a trained CNN (the output of its convolution),
recorded by :class:`bnviz.recorder.Recorder`. ``tests/test_shared_statistics.py`` checks every
number against ``nn.BatchNorm2d``, ``nn.LayerNorm``, ``nn.InstanceNorm2d`` and ``nn.GroupNorm``;
the page shows torch's value next to it (:func:`torch_normalized`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..models import Net
from ..recorder import Recorder

METHODS = ("BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm")
EPS = 1e-5

Entry = tuple[int, int, int, int]   # (n, c, h, w)


def activation_tensor(model: Net, x: torch.Tensor, layer: int) -> np.ndarray:
    """The input of block ``layer``'s norm (its weight layer's output) for the images ``x``
    (N, C_in, H, W), recorded by the recorder on an eval-mode forward pass (the trained model is
    not changed): (N, C, H, W) float64."""
    recorder = Recorder(model, model.recorded_layers(), any_mode=True)
    was_training = model.training
    model.eval()
    recorder.arm()
    with torch.no_grad():
        model(x)
    taps = recorder.tensors()[layer]
    recorder.close()
    model.train(was_training)
    tensor = taps.get("norm_input", taps.get("pre_activation"))
    if tensor is None or tensor.dim() != 4:
        raise ValueError(f"layer {layer} has no (N, C, H, W) input to normalize")
    return tensor.double().numpy()


def shared_set(shape: tuple[int, int, int, int], entry: Entry, method: str, groups: int = 2) -> np.ndarray:
    """Boolean mask (N, C, H, W): the entries ``method`` normalizes together with ``entry``."""
    n, c, _, _ = entry
    channels = shape[1]
    if method == "GroupNorm" and (groups < 1 or channels % groups):
        raise ValueError(f"GroupNorm needs a number of groups that divides the {channels} channels, got {groups}")
    mask = np.zeros(shape, dtype=bool)
    if method == "BatchNorm":
        mask[:, c] = True
    elif method == "LayerNorm":
        mask[n] = True
    elif method == "InstanceNorm":
        mask[n, c] = True
    elif method == "GroupNorm":
        size = channels // groups
        first = (c // size) * size
        mask[n, first:first + size] = True
    else:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return mask


@dataclass(frozen=True)
class Shared:
    """What one method computes for one entry."""

    method: str
    mask: np.ndarray        # (N, C, H, W) bool: the entries normalized together
    mean: float             # mu over the set
    var: float              # biased variance over the set
    value: float            # x at the entry
    normalized: float       # (x - mu) / sqrt(var + eps)

    @property
    def count(self) -> int:
        return int(self.mask.sum())


def shared_statistics(x: np.ndarray, entry: Entry, method: str, groups: int = 2, eps: float = EPS) -> Shared:
    """The set, mean, variance and normalized value of ``entry`` under ``method`` (see the table)."""
    mask = shared_set(x.shape, entry, method, groups)
    values = x[mask]
    mean = float(values.mean())
    var = float(np.mean((values - mean) ** 2))
    value = float(x[entry])
    return Shared(method, mask, mean, var, value, (value - mean) / np.sqrt(var + eps))


def torch_module(method: str, shape: tuple[int, int, int, int], groups: int = 2, eps: float = EPS) -> nn.Module:
    """torch's layer for ``method`` on (N, C, H, W), without learned affine parameters; BatchNorm in
    training mode (batch statistics)."""
    _, c, h, w = shape
    return {"BatchNorm": lambda: nn.BatchNorm2d(c, eps=eps, affine=False).train(),
            "LayerNorm": lambda: nn.LayerNorm([c, h, w], eps=eps, elementwise_affine=False),
            "InstanceNorm": lambda: nn.InstanceNorm2d(c, eps=eps),
            "GroupNorm": lambda: nn.GroupNorm(groups, c, eps=eps, affine=False)}[method]().double()


def torch_normalized(x: np.ndarray, entry: Entry, method: str, groups: int = 2, eps: float = EPS) -> float:
    """torch's normalized value of ``entry``: what the page compares :func:`shared_statistics` with."""
    with torch.no_grad():
        return float(torch_module(method, x.shape, groups, eps)(torch.from_numpy(x))[entry])


def clamp_entry(entry: Entry, shape: tuple[int, ...]) -> Entry:
    """``entry`` moved inside ``shape`` (a control may still hold a position of a larger tensor)."""
    return tuple(min(max(int(i), 0), s - 1) for i, s in zip(entry, shape))  # type: ignore[return-value]


def divisors(channels: int) -> list[int]:
    """The group counts GroupNorm accepts for ``channels`` channels."""
    return [g for g in range(1, channels + 1) if channels % g == 0]
