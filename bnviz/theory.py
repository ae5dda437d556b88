"""Closed-form results that the app's plots draw on top of measured curves.

Every function here is a textbook formula, written out in plain ``math``/``numpy`` (no torch,
no scipy), so that a page can draw the curve theory predicts next to what the network did.
Each docstring gives the formula, a reference, and the plot that needs it.
``tests/test_theory.py`` checks every formula against a Monte-Carlo simulation.

Conventions:

* PyTorch's BatchNorm momentum ``m`` is the weight of the **new** batch statistic:
  ``running = (1 - m) * running + m * batch_stat``. All EMA functions use it. Keras's
  momentum is the weight of the **old** value; convert it with :func:`keras_to_torch_momentum`.
* Functions that take a step count ``t``, a batch size ``n`` or similar accept numpy arrays
  (they broadcast) and return a ``float`` for scalar input or an ``ndarray`` otherwise.
  :func:`relu_gaussian_moments` takes scalars only.
* A bad argument (a momentum outside [0, 1], a negative variance, ``sigma <= 0``, a keep
  probability outside (0, 1], NaN, ...) raises ``ValueError``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ReluMoments",
    "relu_gaussian_moments",
    "relu_gaussian_pdf",
    "ema_lag",
    "ema_expected",
    "ema_stationary_variance",
    "ema_variance",
    "ema_half_life",
    "cumulative_average_variance",
    "batch_mean_variance",
    "batch_var_variance",
    "biased_variance_expectation",
    "keras_to_torch_momentum",
    "torch_to_keras_momentum",
    "dropout_train_variance",
    "dropout_test_variance",
    "dropout_variance_ratio",
]

FloatOrArray = Union[float, NDArray[np.float64]]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------- validation helpers

def _array(value: ArrayLike, name: str) -> NDArray[np.float64]:
    if value is None:
        raise ValueError(f"{name} must be a number, got None")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number or an array of numbers, got {value!r}") from exc
    if np.isnan(arr).any():
        raise ValueError(f"{name} must not be NaN")
    return arr


def _finite(value: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = _array(value, name)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


def _at_least(value: ArrayLike, name: str, low: float, *, finite: bool = True) -> NDArray[np.float64]:
    arr = _finite(value, name) if finite else _array(value, name)
    if (arr < low).any():
        raise ValueError(f"{name} must be >= {low:g}, got {value!r}")
    return arr


def _scalar(value: ArrayLike, name: str) -> float:
    arr = _finite(value, name)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a single number, got shape {arr.shape}")
    return float(arr)


def _momentum(momentum: ArrayLike, name: str = "momentum") -> NDArray[np.float64]:
    if momentum is None:
        raise ValueError(
            f"{name}=None is PyTorch's cumulative average, not an EMA: "
            "use cumulative_average_variance for it"
        )
    arr = _finite(momentum, name)
    if ((arr < 0) | (arr > 1)).any():
        raise ValueError(f"{name} must be in [0, 1], got {momentum!r}")
    return arr


def _steps(t: ArrayLike) -> NDArray[np.float64]:
    # t may be +inf (the stationary limit) but not negative or NaN.
    return _at_least(t, "t (number of updates)", 0.0, finite=False)


def _batch_size(n: ArrayLike, low: int) -> NDArray[np.float64]:
    arr = _at_least(n, "n (batch size)", low)
    if (arr != np.floor(arr)).any():
        raise ValueError(f"n (batch size) must be a whole number, got {n!r}")
    return arr


def _keep_probability(p: ArrayLike) -> NDArray[np.float64]:
    arr = _finite(p, "p (keep probability)")
    if ((arr <= 0) | (arr > 1)).any():
        raise ValueError(f"p (keep probability) must be in (0, 1], got {p!r}")
    return arr


def _out(arr: NDArray[np.float64]) -> FloatOrArray:
    """A float for a 0-d result, the array otherwise."""
    arr = np.asarray(arr, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr


def _std_normal_cdf(a: float) -> float:
    # erfc keeps relative precision deep in the lower tail, where 0.5 * (1 + erf) would round to 0.
    return 0.5 * math.erfc(-a / _SQRT2)


def _std_normal_pdf(a: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * a * a)


# --------------------------------------------------------------------------- ReLU of a Gaussian

@dataclass(frozen=True)
class ReluMoments:
    """Moments of ``Y = ReLU(X)`` for a Gaussian ``X``; see :func:`relu_gaussian_moments`.

    ``p_zero`` is ``P(Y == 0)``, the point mass at zero (the fraction of "dead" outputs).
    """

    mean: float
    var: float
    std: float
    p_zero: float


def relu_gaussian_moments(mu: float = 0.0, sigma: float = 1.0) -> ReluMoments:
    r"""Mean, variance, standard deviation and zero-probability of ReLU(X), X ~ N(mu, sigma^2).

    With ``a = mu / sigma`` and Phi, phi the standard normal cdf and pdf (the moments of the
    rectified Gaussian, i.e. of a normal censored at 0):

    * ``mean   = mu * Phi(a) + sigma * phi(a)``
    * ``E[Y^2] = (mu^2 + sigma^2) * Phi(a) + mu * sigma * phi(a)``
    * ``var    = E[Y^2] - mean^2``  (clipped at 0 against rounding), ``std = sqrt(var)``
    * ``p_zero = P(Y == 0) = 1 - Phi(a) = Phi(-a)``

    For N(0, 1): ``mean = 1/sqrt(2 pi) ~ 0.3989``, ``var = 1/2 - 1/(2 pi) ~ 0.3408``,
    ``std ~ 0.5838``, ``p_zero = 1/2``.

    Reference: the moments of the censored (rectified) normal, e.g. Johnson, Kotz &
    Balakrishnan, *Continuous Univariate Distributions*, vol. 1, 2nd ed. (Wiley, 1994), truncated
    and censored normal distributions; the ``mu = 0`` case ``E[Y^2] = sigma^2 / 2`` is the one
    He et al. (2015), "Delving Deep into Rectifiers", use for their initialization.

    Why the app needs it: a BatchNorm layer placed *before* the activation hands ReLU roughly
    N(beta, gamma^2) inputs, so these are the statistics the *next* layer sees (not zero mean,
    not unit variance, and ``p_zero`` of the units silent); the activation-histogram page
    overlays them on the measured values.

    Raises ``ValueError`` unless ``sigma > 0`` and both arguments are finite numbers.
    """
    mu_f = _scalar(mu, "mu")
    sigma_f = _scalar(sigma, "sigma")
    if sigma_f <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    a = mu_f / sigma_f
    cdf = _std_normal_cdf(a)
    pdf = _std_normal_pdf(a)
    mean = mu_f * cdf + sigma_f * pdf
    # var / sigma^2 = (a^2 + 1) Phi + a phi - (a Phi + phi)^2, written in units of sigma so
    # that a large mu does not cost precision through mu^2 - mu^2.
    mean_unit = a * cdf + pdf
    var = sigma_f * sigma_f * max((a * a + 1.0) * cdf + a * pdf - mean_unit * mean_unit, 0.0)
    return ReluMoments(mean=mean, var=var, std=math.sqrt(var), p_zero=_std_normal_cdf(-a))


def relu_gaussian_pdf(x: ArrayLike, mu: float = 0.0, sigma: float = 1.0) -> FloatOrArray:
    """Density of the continuous part of ReLU(X), X ~ N(mu, sigma^2), at ``x``.

    ``f(x) = 0`` for ``x < 0`` and ``f(x) = phi((x - mu) / sigma) / sigma`` (the normal density)
    for ``x >= 0`` (at ``x = 0`` the right-hand limit, so a grid starting at 0 integrates
    correctly). It integrates to ``1 - p_zero``; the rest of the probability is the point mass
    ``p_zero`` at exactly 0 from :func:`relu_gaussian_moments`, which a plot draws as a spike.

    Reference: as :func:`relu_gaussian_moments` (the censored normal distribution).

    Why the app needs it: the histogram of post-ReLU activations is overlaid with this curve
    (and a bar of height ``p_zero`` at 0), to show the shape BN-then-ReLU predicts.
    """
    mu_f = _scalar(mu, "mu")
    sigma_f = _scalar(sigma, "sigma")
    if sigma_f <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    xs = _array(x, "x")
    z = (xs - mu_f) / sigma_f
    dens = np.where(xs >= 0, np.exp(-0.5 * z * z) * (_INV_SQRT_2PI / sigma_f), 0.0)
    return _out(dens)


# --------------------------------------------------------------------------- running statistics (EMA)

def ema_lag(momentum: ArrayLike, t: ArrayLike) -> FloatOrArray:
    """Weight still on the initial running value after ``t`` updates: ``(1 - m)^t``.

    With PyTorch's update ``running = (1 - m) * running + m * x_t``, unrolling gives
    ``running_t = (1 - m)^t * running_0 + m * sum_{k=1..t} (1 - m)^(t-k) * x_k``.

    Reference: PyTorch ``torch.nn.BatchNorm1d`` documentation (the momentum update rule).

    Why the app needs it: the running-statistics page shows how long BN's running mean and
    variance remember their initial values (0 and 1) after a change of momentum.
    """
    m = _momentum(momentum)
    return _out(np.power(1.0 - m, _steps(t)))


def ema_expected(initial: ArrayLike, true_value: ArrayLike, momentum: ArrayLike,
                 t: ArrayLike) -> FloatOrArray:
    """Expected running value after ``t`` updates on a stationary stream.

    If every batch statistic has expectation ``true_value``:
    ``E[running_t] = true_value + (initial - true_value) * (1 - m)^t``.

    Reference: the unrolled EMA of :func:`ema_lag` (linearity of expectation).

    Why the app needs it: the theory curve drawn under the measured running mean / running
    variance trajectories (initial 0 and 1 in PyTorch), showing the bias of early evaluation.
    """
    init = _finite(initial, "initial")
    true = _finite(true_value, "true_value")
    lag = np.power(1.0 - _momentum(momentum), _steps(t))
    return _out(true + (init - true) * lag)


def ema_stationary_variance(momentum: ArrayLike, stat_variance: ArrayLike) -> FloatOrArray:
    """Variance of the running value once the start is forgotten (``t -> inf``).

    For independent batch statistics with variance ``s = stat_variance``:
    ``Var(running_inf) = m^2 * sum_j (1 - m)^(2j) * s = m / (2 - m) * s``.
    (``m = 1`` keeps only the last batch: ``s``; ``m = 0`` never moves: 0.)

    Reference: the variance of an exponentially weighted moving average of white noise, e.g.
    Roberts (1959), "Control Chart Tests Based on Geometric Moving Averages", Technometrics 1(3);
    update rule from the PyTorch ``BatchNorm`` documentation.

    Why the app needs it: it is the jitter band drawn around the running statistics: a larger
    momentum tracks changes faster but leaves noisier running estimates for eval mode.
    """
    m = _momentum(momentum)
    s = _at_least(stat_variance, "stat_variance", 0.0)
    return _out(m / (2.0 - m) * s)


def ema_variance(momentum: ArrayLike, t: ArrayLike, stat_variance: ArrayLike) -> FloatOrArray:
    """Variance of the running value after ``t`` updates, started from a constant.

    ``Var(running_t) = m^2 * sum_{j=0..t-1} (1 - m)^(2j) * s
    = m / (2 - m) * (1 - (1 - m)^(2t)) * s`` for independent batch statistics of variance
    ``s = stat_variance``; it tends to :func:`ema_stationary_variance` as ``t -> inf``.

    Reference: as :func:`ema_stationary_variance` (Roberts 1959, the finite-``t`` EWMA variance).

    Why the app needs it: the noise band around a running statistic early in training, before
    it has reached its stationary width.
    """
    m = _momentum(momentum)
    s = _at_least(stat_variance, "stat_variance", 0.0)
    steps = _steps(t)
    return _out(m / (2.0 - m) * (1.0 - np.power(1.0 - m, 2.0 * steps)) * s)


def ema_half_life(momentum: ArrayLike) -> FloatOrArray:
    """Updates until the initial value's weight has halved: ``ln(0.5) / ln(1 - m)``.

    ``inf`` for ``m = 0`` (the running value never moves) and ``0`` for ``m = 1`` (the first
    batch replaces it); ``0 <= m <= 1``. PyTorch's default ``m = 0.1`` gives about 6.6 steps.
    The result is a real number; the weight drops below one half after ``ceil`` of it updates.

    Reference: solving ``(1 - m)^t = 1/2`` for the lag of :func:`ema_lag`.

    Why the app needs it: a one-number summary next to the momentum slider ("remembers about
    N batches").
    """
    m = _momentum(momentum)
    inner = (m > 0) & (m < 1)
    safe = np.where(inner, m, 0.5)  # keeps log1p away from -inf; those entries are replaced
    half = np.where(inner, math.log(0.5) / np.log1p(-safe), np.where(m == 0, np.inf, 0.0))
    return _out(half)


def cumulative_average_variance(t: ArrayLike, stat_variance: ArrayLike) -> FloatOrArray:
    """Variance of the plain average of ``t`` independent batch statistics: ``s / t``.

    PyTorch's ``momentum=None`` uses factor ``1 / num_batches_tracked``, so after ``t >= 1``
    updates the running value is the cumulative mean of the ``t`` batch statistics, with
    variance ``stat_variance / t`` (the initial value is gone after the first update).

    Reference: PyTorch ``torch.nn.BatchNorm1d`` documentation (``momentum=None``); the variance
    of a mean of independent variables.

    Why the app needs it: the comparison line for "momentum = None" on the running-statistics
    page: its noise keeps shrinking, but it never forgets statistics from early training.
    """
    steps = _at_least(t, "t (number of updates)", 1.0, finite=False)
    s = _at_least(stat_variance, "stat_variance", 0.0)
    return _out(s / steps)


# --------------------------------------------------------------------------- batch statistics

def batch_mean_variance(s2: ArrayLike, n: ArrayLike) -> FloatOrArray:
    """Variance of the mean of a batch of ``n`` iid samples of variance ``s2``: ``s2 / n``.

    Reference: any statistics text (variance of the sample mean).

    Why the app needs it: the batch-size page shows how noisy the batch mean BN subtracts is;
    it is also the ``stat_variance`` to feed the running-mean EMA functions.
    """
    s = _at_least(s2, "s2 (variance)", 0.0)
    return _out(s / _batch_size(n, 1))


def batch_var_variance(s2: ArrayLike, n: ArrayLike, unbiased: bool) -> FloatOrArray:
    """Variance of a batch's sample variance for ``n`` iid N(mu, s2) samples.

    ``(n - 1) * S^2 / s2`` is chi-squared with ``n - 1`` degrees of freedom (variance
    ``2 (n - 1)``), hence

    * ``unbiased=True``  (divide by ``n - 1``): ``Var = 2 * s2^2 / (n - 1)``, needs ``n >= 2``;
    * ``unbiased=False`` (divide by ``n``):     ``Var = 2 * (n - 1) * s2^2 / n^2``, ``n >= 1``.

    Gaussian samples only: for another distribution with excess kurtosis ``k`` the unbiased
    one's variance is ``s2^2 * (2 / (n - 1) + k / n)``, so heavy-tailed (e.g. post-ReLU)
    activations give noisier batch variances.

    Reference: Cochran's theorem / the sampling distribution of the sample variance, e.g.
    Casella & Berger, *Statistical Inference*, 2nd ed., Theorem 5.3.1.

    Why the app needs it: BN normalizes with the *biased* batch variance and accumulates the
    *unbiased* one into ``running_var``; this is the noise of each (the ``stat_variance`` of the
    running-variance EMA), which grows sharply at small batch sizes.
    """
    if not isinstance(unbiased, (bool, np.bool_)):
        raise ValueError(f"unbiased must be True or False, got {unbiased!r}")
    s = _at_least(s2, "s2 (variance)", 0.0)
    if unbiased:
        size = _batch_size(n, 2)
        return _out(2.0 * s * s / (size - 1.0))
    size = _batch_size(n, 1)
    return _out(2.0 * (size - 1.0) * s * s / (size * size))


def biased_variance_expectation(s2: ArrayLike, n: ArrayLike) -> FloatOrArray:
    """Expected biased (divide-by-``n``) batch variance: ``(n - 1) / n * s2``.

    Reference: Bessel's correction; Ioffe & Szegedy (2015), "Batch Normalization", Algorithm 2,
    which uses the unbiased estimate ``n / (n - 1) * E[sigma_B^2]`` for inference.

    Why the app needs it: it is why BN stores the *unbiased* variance in ``running_var``: the
    biased one BN normalizes with in training is too small by the factor ``(n - 1) / n``, which
    matters at small batch sizes (a half for n = 2).
    """
    s = _at_least(s2, "s2 (variance)", 0.0)
    size = _batch_size(n, 1)
    return _out((size - 1.0) / size * s)


# --------------------------------------------------------------------------- momentum conventions

def keras_to_torch_momentum(keras_m: ArrayLike) -> FloatOrArray:
    """PyTorch momentum equivalent to a Keras momentum: ``1 - keras_m``.

    The two update rules are the same EMA, parameterized by opposite weights:

    * Keras / TensorFlow: ``moving = moving * momentum + batch_stat * (1 - momentum)``
      (momentum, default 0.99, is the weight of the **old** value);
    * PyTorch: ``running = (1 - momentum) * running + momentum * batch_stat``
      (momentum, default 0.1, is the weight of the **new** batch).

    So Keras 0.99 is PyTorch 0.01, and PyTorch's default 0.1 is Keras 0.9.

    Reference: ``keras.layers.BatchNormalization`` and ``torch.nn.BatchNorm1d`` documentation.

    Why the app needs it: the momentum control accepts either convention, since students
    copying a value from a Keras tutorial into PyTorch get a running average that barely moves.
    """
    return _out(1.0 - _momentum(keras_m, "keras_m"))


def torch_to_keras_momentum(torch_m: ArrayLike) -> FloatOrArray:
    """Keras momentum equivalent to a PyTorch momentum: ``1 - torch_m``.

    Update rules: Keras ``moving = moving * momentum + batch_stat * (1 - momentum)`` (weight
    of the old value); PyTorch ``running = (1 - momentum) * running + momentum * batch_stat``
    (weight of the new batch). See :func:`keras_to_torch_momentum`.

    Reference: ``keras.layers.BatchNormalization`` and ``torch.nn.BatchNorm1d`` documentation.

    Why the app needs it: to show the Keras-convention value next to the PyTorch one.
    """
    return _out(1.0 - _momentum(torch_m, "torch_m"))


# --------------------------------------------------------------------------- dropout variance shift

def dropout_train_variance(c: ArrayLike, v: ArrayLike, p: ArrayLike) -> FloatOrArray:
    """Variance of inverted dropout's output in train mode: ``(c^2 + v) / p - c^2``.

    For ``x`` with mean ``c`` and variance ``v``, keep probability ``p`` and
    ``y = x * mask / p``, ``mask ~ Bernoulli(p)`` independent of ``x``: ``E[y] = c`` and
    ``E[y^2] = E[x^2] * E[mask^2] / p^2 = (c^2 + v) / p``.

    Reference: Li, Chen, Hu & Yang (2019), "Understanding the Disharmony between Dropout and
    Batch Normalization by Variance Shift", CVPR 2019 (arXiv:1801.05134).

    Why the app needs it: with dropout before BN, BN's running variance learns this (larger)
    train-mode variance; the dropout page overlays it on the measured one.
    """
    cc = _finite(c, "c (mean)")
    var = _at_least(v, "v (variance)", 0.0)
    keep = _keep_probability(p)
    return _out((cc * cc + var) / keep - cc * cc)


def dropout_test_variance(c: ArrayLike, v: ArrayLike, p: ArrayLike) -> FloatOrArray:
    """Variance of inverted dropout's output in eval mode: ``v`` (dropout is the identity).

    ``c`` and ``p`` are validated (and broadcast) like :func:`dropout_train_variance`'s, so the
    two can be called with the same arguments.

    Reference: Li et al. (2019), CVPR, arXiv:1801.05134.

    Why the app needs it: the variance BN actually receives at test time, to compare with the
    train-mode variance its running statistics were accumulated from.
    """
    cc = _finite(c, "c (mean)")
    var = _at_least(v, "v (variance)", 0.0)
    keep = _keep_probability(p)
    return _out(np.broadcast_arrays(var, cc, keep)[0].copy())


def dropout_variance_ratio(c: ArrayLike, v: ArrayLike, p: ArrayLike) -> FloatOrArray:
    """Train-mode over test-mode variance: ``((c^2 + v) / p - c^2) / v``  (>= 1).

    For ``c = 0`` it is ``1 / p``. Its reciprocal is the factor by which the test-time variance
    falls short of the running variance BN learned in training ("variance shift"). Needs
    ``v > 0``.

    Reference: Li et al. (2019), "Understanding the Disharmony between Dropout and Batch
    Normalization by Variance Shift", CVPR 2019 (arXiv:1801.05134).

    Why the app needs it: the single number the dropout page reports for the chosen dropout
    rate, explaining why dropout placed before BN can hurt eval-mode accuracy.
    """
    var = _finite(v, "v (variance)")
    if (var <= 0).any():
        raise ValueError(f"v (variance) must be > 0 for a ratio, got {v!r}")
    return _out(np.asarray(dropout_train_variance(c, v, p)) / var)
