"""BatchNorm one number at a time: Algorithm 1 on a tiny batch, and per-channel statistics of a CNN.

The Inside-BN page walks a batch of a few samples through the four lines of Ioffe & Szegedy's
Algorithm 1 and shows every intermediate number; :func:`batch_steps` computes them in float64
numpy, independently of both BatchNorm implementations it is then compared with
(:func:`compare_implementations`: bnviz's reference :class:`~bnviz.norms.BatchNorm` and
``torch.nn.BatchNorm1d``). :func:`conv_channels` shows the same statistics where they are less
obvious: after a convolution, BatchNorm2d keeps one mean and one variance per *channel*, reduced
over the batch and both spatial axes (0, 2, 3).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..models import Net
from ..norms import BatchNorm
from ..recorder import Recorder
from ..train import batchnorm_train_mode

EPS = 1e-5


def example_batch(seed: int, m: int = 4, d: int = 3) -> np.ndarray:
    """A readable (m, d) batch: feature j has mean about 2j - 2 and spread about j + 1, rounded to
    one decimal, so the features visibly differ in location and scale before normalization."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * np.arange(d) - 2.0
    spreads = np.arange(d) + 1.0
    return np.round(centres + spreads * rng.standard_normal((m, d)), 1)


@dataclass(frozen=True)
class BatchSteps:
    """Every intermediate value of Algorithm 1 for a batch x of shape (m, d)."""

    x: np.ndarray          # (m, d) input
    mean: np.ndarray       # (d,) mu_B = mean over the batch
    var: np.ndarray        # (d,) sigma^2_B, biased (divide by m)
    centred: np.ndarray    # (m, d) x - mu_B
    x_hat: np.ndarray      # (m, d) (x - mu_B) / sqrt(sigma^2_B + eps)
    y: np.ndarray          # (m, d) gamma * x_hat + beta
    gamma: np.ndarray      # (d,)
    beta: np.ndarray       # (d,)
    eps: float


def batch_steps(x: np.ndarray, gamma: np.ndarray | float = 1.0, beta: np.ndarray | float = 0.0,
                eps: float = EPS) -> BatchSteps:
    """Algorithm 1 of Ioffe & Szegedy (2015), line by line, in float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need a batch of at least 2 samples, shape (m, d); got shape {x.shape}")
    d = x.shape[1]
    gamma = np.broadcast_to(np.asarray(gamma, dtype=np.float64), (d,)).copy()
    beta = np.broadcast_to(np.asarray(beta, dtype=np.float64), (d,)).copy()
    mean = x.sum(axis=0) / len(x)
    centred = x - mean
    var = (centred ** 2).sum(axis=0) / len(x)
    x_hat = centred / np.sqrt(var + eps)
    return BatchSteps(x=x, mean=mean, var=var, centred=centred, x_hat=x_hat, y=gamma * x_hat + beta,
                      gamma=gamma, beta=beta, eps=eps)


@dataclass(frozen=True)
class Comparison:
    reference: np.ndarray   # bnviz.norms.BatchNorm output (float32)
    torch: np.ndarray       # torch.nn.BatchNorm1d output (float32)
    max_abs_diff: float     # max |reference - torch|


def compare_implementations(steps: BatchSteps) -> Comparison:
    """Run the batch through bnviz's reference BatchNorm and torch.nn.BatchNorm1d (training mode,
    same gamma, beta and eps, float32) and report their outputs and largest absolute difference."""
    x = torch.from_numpy(steps.x.astype(np.float32))
    d = x.shape[1]
    outputs = []
    for layer in (BatchNorm(d, eps=steps.eps), nn.BatchNorm1d(d, eps=steps.eps)):
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(steps.gamma))
            layer.bias.copy_(torch.from_numpy(steps.beta))
            outputs.append(layer.train()(x).numpy())
    return Comparison(reference=outputs[0], torch=outputs[1],
                      max_abs_diff=float(np.max(np.abs(outputs[0] - outputs[1]))))


def channel_statistics(t: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance of an (N, C, H, W) tensor, reduced over axes (0, 2, 3):
    the statistics BatchNorm2d normalizes channel c with."""
    a = np.asarray(t, dtype=np.float64)
    return a.mean(axis=(0, 2, 3)), a.var(axis=(0, 2, 3))


@dataclass(frozen=True)
class ConvChannels:
    """A batch of images through the first conv block of a CNN, in BN training mode."""

    images: np.ndarray          # (N, H, W) network inputs (standardized pixels)
    conv: np.ndarray            # (N, C, H, W) conv output = BatchNorm2d input
    bn: np.ndarray              # (N, C, H, W) BatchNorm2d output (batch statistics)
    batch_mean: np.ndarray      # (C,) over axes (0, 2, 3)
    batch_var: np.ndarray       # (C,) biased
    running_mean: np.ndarray    # (C,) the layer's running estimates after training
    running_var: np.ndarray     # (C,) unbiased, as torch stores it


def conv_channels(model: Net, images: torch.Tensor, block: int = 0) -> ConvChannels:
    """Tap the first conv block of a trained CNN on ``images`` (N, 1, H, W), BN using the batch's
    statistics as in a training step. Works on a copy: the (shared) model is not touched."""
    net = copy.deepcopy(model)
    norm = net.blocks[block].norm
    if norm is None or not isinstance(net.blocks[block].weight, nn.Conv2d):
        raise ValueError("conv_channels needs a CNN whose conv block has a BatchNorm2d layer")
    batchnorm_train_mode(net)
    recorder = Recorder(net, net.recorded_layers(), any_mode=True)
    recorder.arm()
    with torch.no_grad():
        net(images)
    taps = recorder.tensors()[block]
    recorder.close()
    conv, bn = taps["norm_input"].numpy(), taps["norm_output"].numpy()
    mean, var = channel_statistics(conv)
    return ConvChannels(images=images[:, 0].numpy(), conv=conv, bn=bn, batch_mean=mean, batch_var=var,
                        running_mean=model.blocks[block].norm.running_mean.numpy().copy(),
                        running_var=model.blocks[block].norm.running_var.numpy().copy())
