"""Running statistics without a network: BatchNorm's running averages fed a known stream of batches.

A BN layer's running mean and variance are exponential moving averages (EMAs) of per-batch
statistics. Whether they are any good at test time depends on two things only: how noisy each
batch statistic is (batch size) and how fast the true statistics move while the weights train
(drift). This module isolates both: batches are drawn from ``N(mu_k, sigma_k^2)`` with a true
mean and standard deviation that are known at every batch ``k`` (constant, a linear drift or a
step change), and the running estimates are computed exactly as ``torch.nn.BatchNorm1d`` does:

* running mean:      ``r_t = (1 - m) r_{t-1} + m * mean(batch_t)``,            ``r_0 = 0``;
* running variance:  ``v_t = (1 - m) v_{t-1} + m * var_unbiased(batch_t)``,  ``v_0 = 1``;
* ``momentum=None``: ``m = 1 / t`` (the cumulative average of all batch statistics so far).

``tests/test_streams.py`` feeds the same batches to ``torch.nn.BatchNorm1d`` and checks that its
``running_mean`` / ``running_var`` equal these estimates. The expected value and noise of every
estimate come from :mod:`bnviz.theory` (closed forms for a stationary stream) or from the same
moment recursions step by step (a drifting stream), so the page can draw "where the estimate
should be" around "where it is".

This module does not train, does not use torch and does not know about Streamlit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import theory

DRIFTS = ("none", "linear", "step")
INITIAL = {"mean": 0.0, "var": 1.0, "var_biased": 1.0}  # torch's running_mean / running_var start
MAX_BATCHES = 5000
MAX_BATCH_SIZE = 1024


@dataclass(frozen=True)
class StreamSpec:
    """The distribution the batches come from, and how many of what size.

    The true mean moves from ``mu`` to ``mu + mean_shift`` and the true standard deviation from
    ``sigma`` to ``sigma * std_factor``: never (``drift="none"``), evenly over the stream
    (``"linear"``, as a layer's input drifts while the weights train) or at once in the middle
    (``"step"``, like a sudden change of learning rate or data). ``channels`` independent copies
    of the stream are drawn at once (one BN channel each); the page uses one, the tests use many.
    """

    mu: float = 1.0
    sigma: float = 2.0
    batch_size: int = 16
    n_batches: int = 300
    drift: str = "none"
    mean_shift: float = 2.0
    std_factor: float = 1.0
    seed: int = 0
    channels: int = 1

    @property
    def stationary(self) -> bool:
        return self.drift == "none" or (self.mean_shift == 0 and self.std_factor == 1)


def problems(spec: StreamSpec) -> list[str]:
    """Why a stream cannot be simulated, each as a sentence a student understands."""
    out = []
    if spec.batch_size < 2:
        out.append(
            "A batch of one has no spread: its unbiased variance divides by n - 1 = 0 and is "
            "undefined, so BatchNorm cannot update its running variance (torch refuses to train "
            "a BatchNorm layer on one value per channel). Use a batch of 2 or more.")
    if spec.batch_size > MAX_BATCH_SIZE:
        out.append(f"Batch size is limited to {MAX_BATCH_SIZE}.")
    if not 1 <= spec.n_batches <= MAX_BATCHES:
        out.append(f"The number of batches must be between 1 and {MAX_BATCHES}.")
    if not (math.isfinite(spec.sigma) and spec.sigma > 0):
        out.append("The true standard deviation must be positive.")
    if not (math.isfinite(spec.std_factor) and spec.std_factor > 0):
        out.append("The standard-deviation drift factor must be positive (1 = no change).")
    if not (math.isfinite(spec.mu) and math.isfinite(spec.mean_shift)):
        out.append("The true mean and its shift must be finite numbers.")
    if spec.drift not in DRIFTS:
        out.append(f"Drift must be one of {', '.join(DRIFTS)}.")
    if spec.channels < 1:
        out.append("At least one channel is needed.")
    return out


def true_moments(spec: StreamSpec) -> tuple[np.ndarray, np.ndarray]:
    """(mean, variance) of the distribution each batch k = 1..T is drawn from, shape (T,)."""
    t = spec.n_batches
    if spec.drift == "linear" and t > 1:
        frac = np.arange(t) / (t - 1)
    elif spec.drift == "step":
        frac = (np.arange(t) >= t // 2).astype(np.float64)
    else:
        frac = np.zeros(t)
    mean = spec.mu + spec.mean_shift * frac
    std = spec.sigma * (1.0 + (spec.std_factor - 1.0) * frac)
    return mean, std * std


def batches(spec: StreamSpec) -> np.ndarray:
    """The samples, shape (T, n, channels), float64, from ``numpy.random.default_rng(seed)``."""
    mean, var = true_moments(spec)
    rng = np.random.default_rng(spec.seed)
    z = rng.standard_normal((spec.n_batches, spec.batch_size, spec.channels))
    return mean[:, None, None] + np.sqrt(var)[:, None, None] * z


@dataclass(frozen=True)
class Stream:
    """Per-batch statistics of a simulated stream: arrays of shape (T, channels) unless noted."""

    spec: StreamSpec
    true_mean: np.ndarray        # (T,)
    true_var: np.ndarray         # (T,)
    batch_mean: np.ndarray
    batch_var: np.ndarray        # unbiased (divide by n - 1), as torch accumulates
    batch_var_biased: np.ndarray  # biased (divide by n), as BN normalizes with

    def batch_stat(self, stat: str) -> np.ndarray:
        return {"mean": self.batch_mean, "var": self.batch_var, "var_biased": self.batch_var_biased}[stat]


def simulate(spec: StreamSpec) -> Stream:
    """Draw the stream and compute each batch's mean and variances (vectorized over batches)."""
    found = problems(spec)
    if found:
        raise ValueError(" ".join(found))
    x = batches(spec)
    mean, var = true_moments(spec)
    return Stream(spec=spec, true_mean=mean, true_var=var, batch_mean=x.mean(axis=1),
                  batch_var=x.var(axis=1, ddof=1), batch_var_biased=x.var(axis=1, ddof=0))


def running_estimate(values: np.ndarray, momentum: float | None, initial: float) -> np.ndarray:
    """BatchNorm's running average of per-batch ``values`` (shape (T,) or (T, C)): T + 1 rows.

    Row 0 is the initial value (torch: 0 for the mean, 1 for the variance); row t is the value
    after t updates. ``momentum`` follows PyTorch (the weight of the new batch); ``None`` is the
    cumulative average (factor 1/t), i.e. a cumulative sum divided by t.
    """
    values = np.asarray(values, dtype=np.float64)
    if momentum is None:
        steps = np.arange(1, len(values) + 1).reshape((-1,) + (1,) * (values.ndim - 1))
        return np.concatenate([np.full((1,) + values.shape[1:], float(initial)),
                               np.cumsum(values, axis=0) / steps])
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
    return _recursion(1.0 - momentum, momentum, values, initial)


_BLOCK = 256


def _recursion(keep: float, weight: float, values: np.ndarray, initial: float) -> np.ndarray:
    """``r_0 = initial``, ``r_k = keep * r_{k-1} + weight * values[k-1]``: rows 0..T.

    Vectorized in blocks of B batches: inside a block ``r_{s+i} = keep^(i+1) r_s + weight *
    sum_{j<=i} keep^(i-j) x_{s+j}``, a lower-triangular matrix product. Only powers
    ``keep^0..keep^B`` appear (all <= 1), so nothing overflows whatever the momentum, unlike the
    one-shot ``keep^t * cumsum(keep^-k x_k)``.
    """
    flat = values.reshape(len(values), -1)
    t = len(flat)
    j = np.arange(min(t, _BLOCK))
    diff = j[:, None] - j[None, :]
    lower = np.where(diff >= 0, keep ** np.maximum(diff, 0), 0.0)
    carry_weights = keep ** (j + 1.0)
    out = np.empty((t + 1, flat.shape[1]))
    out[0] = initial
    r = out[0]
    for start in range(0, t, _BLOCK):
        x = flat[start:start + _BLOCK]
        b = len(x)
        block = weight * (lower[:b, :b] @ x) + np.outer(carry_weights[:b], r)
        out[start + 1:start + b + 1] = block
        r = block[-1]
    return out.reshape((t + 1,) + values.shape[1:])


def _stat_moments(stream: Stream, stat: str) -> tuple[np.ndarray, np.ndarray]:
    """Expectation and variance of one batch statistic at each batch (Gaussian samples), (T,)."""
    n = stream.spec.batch_size
    if stat == "mean":
        return stream.true_mean, np.asarray(theory.batch_mean_variance(stream.true_var, n))
    if stat == "var":
        return stream.true_var, np.asarray(theory.batch_var_variance(stream.true_var, n, unbiased=True))
    return (np.asarray(theory.biased_variance_expectation(stream.true_var, n)),
            np.asarray(theory.batch_var_variance(stream.true_var, n, unbiased=False)))


def expected_band(stream: Stream, stat: str, momentum: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Expected value and standard deviation of the running estimate after t = 0..T updates.

    Stationary stream: the closed forms of :mod:`bnviz.theory`:
    ``E = theory.ema_expected(initial, true, m, t)``, ``Var = theory.ema_variance(m, t, s)``,
    and for ``momentum=None`` ``E = true``, ``Var = theory.cumulative_average_variance(t, s)``
    (``s``: the variance of one batch statistic). A drifting stream has no closed form; the same
    linear recursions run step by step: ``E_t = (1 - m) E_{t-1} + m e_t`` and
    ``V_t = (1 - m)^2 V_{t-1} + m^2 s_t`` (batch statistics are independent).
    The band the page draws is ``E +- 2 sqrt(Var)``.
    """
    e, s = _stat_moments(stream, stat)
    initial = INITIAL[stat]
    t_all = np.arange(stream.spec.n_batches + 1, dtype=np.float64)
    if stream.spec.stationary:
        if momentum is None:
            expected = np.full(t_all.shape, e[0])
            expected[0] = initial
            var = np.zeros_like(t_all)
            var[1:] = theory.cumulative_average_variance(t_all[1:], s[0])
        else:
            expected = np.asarray(theory.ema_expected(initial, e[0], momentum, t_all))
            var = np.asarray(theory.ema_variance(momentum, t_all, s[0]))
        return expected, np.sqrt(var)
    if momentum is None:
        expected = running_estimate(e, None, initial)
        var = np.concatenate([[0.0], np.cumsum(s) / t_all[1:] ** 2])
        return expected, np.sqrt(var)
    expected = _recursion(1.0 - momentum, momentum, e, initial)
    var = _recursion((1.0 - momentum) ** 2, momentum * momentum, s, 0.0)
    return expected, np.sqrt(var)


def drift_lag(momentum: float) -> float:
    """Batches by which an EMA trails a linearly drifting value once the start is forgotten: ``(1-m)/m``.

    Unrolling ``r_t = (1 - m) r_{t-1} + m x_t`` for ``x_t = a + b t`` gives
    ``x_t - E[r_t] -> b * sum_j j m (1-m)^j = b (1 - m) / m``, i.e. the running estimate equals
    the value of ``(1 - m) / m`` batches ago (9 for m = 0.1, 99 for m = 0.01).
    """
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
    return (1.0 - momentum) / momentum
