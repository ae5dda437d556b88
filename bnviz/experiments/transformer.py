"""Normalization in a tiny transformer: placement, warm-up, and what LayerNorm, RMSNorm and DyT compute.

Four experiments on :mod:`bnviz.tiny_transformer` learning to sort (Post-LN, Pre-LN, RMSNorm, DyT, none):

* :func:`gradients_at_init`: the gradient norm of each block's second feed-forward weight
  ``W2`` (``linear2``) on the first training batch. Xiong et al. (2020), *On Layer Normalization in
  the Transformer Architecture*, show that at initialization Post-LN's gradients near the output
  are large (growing with the layer index) while Pre-LN's stay level, which is why Post-LN needs a
  learning-rate warm-up. What this tiny model shows is measured, not assumed: the page draws it.
* :func:`train_variants`: Adam with and without a linear warm-up of the learning rate
  (``lr * min(1, (step + 1) / warmup)``), every variant from the same seed and batches;
* :func:`normalization_scatter`: a trained network's LayerNorm input against its normalized
  output ``x_hat = (y - beta) / gamma`` per channel, as recorded by :class:`bnviz.recorder.Recorder`
  (Zhu et al. 2025: across tokens the points trace an S-shaped, tanh-like curve, which DyT imitates);
* :func:`one_vector`: LayerNorm and RMSNorm (without their affine parameters) of one vector and
  of a shifted and rescaled copy: LayerNorm is invariant to both, RMSNorm only to the scale.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import Config
from ..recorder import Recorder
from ..tiny_transformer import VARIANTS, TinyTransformer, build_transformer, sorting_task
from ..train import Curves, train_steps
from .depth_gradients import GradientNorms

LENGTH, VOCAB = 8, 10
MAIN = ("Post-LN", "Pre-LN")   # the two Xiong et al. compare; the others on request
# One vector to normalize (8 features): any vector with unequal values would do.
VECTOR = np.array([1.5, -0.3, 2.2, 0.4, -1.1, 0.9, 3.0, -0.6])
EPS = 1e-5


def task(config: Config):
    """The sorting task of ``config``'s seed: 4,000 training and 500 test sequences."""
    return sorting_task(length=LENGTH, vocab=VOCAB, seed=config.seed)


def model_for(config: Config, variant: str, layers: int) -> TinyTransformer:
    return build_transformer(variant, VOCAB, LENGTH, layers=layers, generator=torch.Generator().manual_seed(config.seed))


def ff_weights(model: TinyTransformer) -> list[torch.Tensor]:
    """Each block's second feed-forward weight W2 (``linear2.weight``), layer 1 first."""
    return [b.linear2.weight for b in model.blocks]


def gradients_at_init(config: Config, layers: int, variants: Sequence[str] = tuple(VARIANTS)) -> dict[str, np.ndarray]:
    """||dL/dW2_l||_F per layer at initialization: one step of the training run (its first batch)."""
    data = task(config)
    out = {}
    for variant in variants:
        reading = GradientNorms(ff_weights)
        train_steps(config.replace(steps=1, eval_every=1), dataset=data, model=model_for(config, variant, layers),
                    callbacks=[reading])
        out[variant] = reading.norms[0]
    return out


def warmup_schedule(lr: float, warmup: int) -> Callable[[int], float]:
    """Linear warm-up: ``lr * (step + 1) / warmup`` for the first ``warmup`` steps, then ``lr``."""
    return lambda step: lr * min(1.0, (step + 1) / warmup)


@dataclass(frozen=True)
class TransformerRun:
    variant: str
    warmup: int              # warm-up steps (0: none)
    curves: Curves
    model: TinyTransformer   # after training, eval mode; shared: copy before changing it


def train_variants(config: Config, layers: int, warmup: int, variants: Sequence[str] = MAIN,
                   progress: Callable[[int, int, str], None] | None = None) -> dict[str, TransformerRun]:
    """Every variant without and with ``warmup`` steps of warm-up; keys "<variant>, no warm-up" and
    "<variant>, warm-up"."""
    jobs = [(v, w) for w in (0, warmup) for v in variants]
    out = {}
    for i, (variant, w) in enumerate(jobs):
        def report(done: int, total: int, i=i, variant=variant, w=w) -> None:
            if progress is not None:
                progress(i * total + done, len(jobs) * total, f"{run_label(variant, w)}: step {done}/{total}")
        out[run_label(variant, w)] = train_one(config, variant, layers, w, report)
    return out


def train_one(config: Config, variant: str, layers: int, warmup: int,
              progress: Callable[[int, int], None] | None = None) -> TransformerRun:
    """One variant trained with ``warmup`` steps of warm-up (0: none)."""
    curves, model = train_steps(config, dataset=task(config), model=model_for(config, variant, layers),
                                progress=progress, lr_schedule=warmup_schedule(config.lr, warmup) if warmup else None)
    return TransformerRun(variant, warmup, curves, model)


def run_label(variant: str, warmup: int) -> str:
    return f"{variant}, {'warm-up' if warmup else 'no warm-up'}"


@dataclass(frozen=True)
class Scatter:
    """One norm layer's input and normalized output, value by value: ``x`` and ``x_hat`` (k,),
    ``channel`` (k,) the feature each value belongs to."""

    name: str
    x: np.ndarray
    x_hat: np.ndarray
    channel: np.ndarray


def normalization_scatter(model: TinyTransformer, tokens: torch.Tensor, channels: int = 8) -> list[Scatter]:
    """Each recorded norm layer's input and normalized output on ``tokens`` (N, T), for the first
    ``channels`` features: the recorder taps every LayerNorm / RMSNorm of the model (found by type)
    on one training-mode forward; ``x_hat = (y - beta) / gamma`` from the recorded gamma and beta
    (features whose |gamma| < 1e-6 are left out)."""
    recorder = Recorder(model)
    was_training = model.training
    model.train()
    recorder.arm()
    with torch.no_grad():
        model(tokens)
    tensors = recorder.tensors()
    snap = recorder.collect(0)
    model.train(was_training)
    out = []
    for i, (spec, taps) in enumerate(zip(recorder.layers, tensors)):
        if "norm_input" not in taps or snap is None:
            continue
        stats = snap.norms[i]
        width = taps["norm_input"].shape[-1]
        x = taps["norm_input"].reshape(-1, width)[:, :channels].numpy()
        y = taps["norm_output"].reshape(-1, width)[:, :channels].numpy()
        gamma = stats.weight[:channels] if stats.weight is not None else np.ones(channels, np.float32)
        beta = stats.bias[:channels] if stats.bias is not None else np.zeros(channels, np.float32)
        keep = np.abs(gamma) >= 1e-6
        x_hat = (y[:, keep] - beta[keep]) / gamma[keep]
        channel = np.broadcast_to(np.flatnonzero(keep), x_hat.shape)
        out.append(Scatter(spec.name, x[:, keep].ravel(), x_hat.ravel(), channel.ravel()))
    return out


def fit_tanh(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The DyT curve ``gamma * tanh(alpha * x)`` closest to the points (least squares): alpha on a
    log grid from 0.01 to 10, gamma in closed form for each."""
    best = (np.inf, 1.0, 1.0)
    for alpha in np.geomspace(0.01, 10, 300):
        t = np.tanh(alpha * x)
        gamma = float(t @ y / max(t @ t, 1e-12))
        err = float(np.sum((y - gamma * t) ** 2))
        if err < best[0]:
            best = (err, float(alpha), gamma)
    return best[1], best[2]


def layer_norm(v: np.ndarray, eps: float = EPS) -> np.ndarray:
    """``(v - mean) / sqrt(var + eps)`` over the last axis (biased variance), no affine."""
    return (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + eps)


def rms_norm(v: np.ndarray, eps: float = EPS) -> np.ndarray:
    """``v / sqrt(mean(v^2) + eps)`` over the last axis, no affine (Zhang & Sennrich 2019)."""
    return v / np.sqrt(np.mean(v * v, -1, keepdims=True) + eps)


@dataclass(frozen=True)
class OneVector:
    """LayerNorm and RMSNorm of ``v`` and of ``scale * v + shift``."""

    v: np.ndarray
    moved: np.ndarray
    ln: np.ndarray
    ln_moved: np.ndarray
    rms: np.ndarray
    rms_moved: np.ndarray

    @property
    def ln_change(self) -> float:
        """Largest |LN(moved) - LN(v)|: 0 up to eps for any shift and positive scale."""
        return float(np.max(np.abs(self.ln_moved - self.ln)))

    @property
    def rms_change(self) -> float:
        return float(np.max(np.abs(self.rms_moved - self.rms)))


def one_vector(shift: float, scale: float, v: np.ndarray = VECTOR) -> OneVector:
    moved = scale * v + shift
    return OneVector(v=v, moved=moved, ln=layer_norm(v), ln_moved=layer_norm(moved), rms=rms_norm(v),
                     rms_moved=rms_norm(moved))
