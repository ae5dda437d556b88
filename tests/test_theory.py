"""bnviz.theory against Monte-Carlo simulation (numpy, seeded) and exact constants.

Every Monte-Carlo comparison allows ``K_SE`` standard errors, with the standard error
estimated from the simulated sample itself (for a variance: from its fourth central moment),
so a tolerance tightens automatically when the simulation gets bigger. The seeds are fixed, so
the file is deterministic.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnviz import theory as th

K_SE = 5.0
N_SAMPLES = 2_000_000


def rng_for(*key: object) -> np.random.Generator:
    """A generator seeded from the test case, so cases do not share random numbers."""
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 20240601])


def assert_close_se(estimate: float, expected: float, se: float, what: str = "") -> None:
    assert se >= 0
    assert abs(estimate - expected) <= K_SE * se + 1e-12 * max(1.0, abs(expected)), (
        f"{what}: estimate {estimate!r} vs theory {expected!r}: "
        f"{abs(estimate - expected) / se if se else math.inf:.1f} standard errors (se={se:.3g})"
    )


def mean_se(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and its standard error."""
    n = x.shape[axis]
    return x.mean(axis=axis), x.std(axis=axis, ddof=1) / math.sqrt(n)


def var_se(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unbiased sample variance and its (large-sample) standard error sqrt((mu4 - var^2) / n)."""
    n = x.shape[axis]
    centered = x - x.mean(axis=axis, keepdims=True)
    var = (centered**2).sum(axis=axis) / (n - 1)
    mu4 = (centered**4).mean(axis=axis)
    return var, np.sqrt(np.maximum(mu4 - var**2, 0.0) / n)


# =========================================================================== ReLU of a Gaussian

def test_relu_standard_normal_exact_constants():
    m = th.relu_gaussian_moments()
    mean = 1.0 / math.sqrt(2.0 * math.pi)
    var = 0.5 - 1.0 / (2.0 * math.pi)
    assert m.mean == pytest.approx(mean, rel=1e-14)
    assert m.var == pytest.approx(var, rel=1e-14)
    assert m.std == pytest.approx(math.sqrt(var), rel=1e-14)
    assert m.p_zero == 0.5
    rounded = (round(m.mean, 4), round(m.var, 4), round(m.std, 4), m.p_zero)
    assert rounded == (0.3989, 0.3408, 0.5838, 0.5)
    assert th.relu_gaussian_moments(0.0, 1.0) == m  # frozen dataclass: comparable
    with pytest.raises(Exception):
        m.mean = 1.0  # type: ignore[misc]


def test_relu_zero_mean_scales_with_sigma():
    # mu = 0: E[Y^2] = sigma^2 / 2 (He et al. 2015), mean = sigma / sqrt(2 pi).
    m = th.relu_gaussian_moments(0.0, 3.0)
    assert m.mean == pytest.approx(3.0 / math.sqrt(2 * math.pi), rel=1e-14)
    assert m.var + m.mean**2 == pytest.approx(9.0 / 2.0, rel=1e-14)
    assert m.p_zero == 0.5


RELU_CASES = [(0.0, 1.0), (1.0, 2.0), (-1.0, 1.0), (-2.0, 0.5), (3.0, 1.0), (0.5, 3.0), (-0.3, 0.1)]


@pytest.mark.parametrize("mu,sigma", RELU_CASES)
def test_relu_moments_match_monte_carlo(mu, sigma):
    x = rng_for("relu", mu, sigma).normal(mu, sigma, N_SAMPLES)
    y = np.maximum(x, 0.0)
    theory = th.relu_gaussian_moments(mu, sigma)

    mean, se = mean_se(y)
    assert_close_se(mean, theory.mean, se, "mean")
    var, se_var = var_se(y)
    assert_close_se(var, theory.var, se_var, "var")
    assert theory.std == pytest.approx(math.sqrt(theory.var))
    # p_zero is the exact-zero fraction: ReLU sends every x <= 0 to exactly 0.0.
    zero_fraction = np.count_nonzero(y == 0.0) / y.size
    assert_close_se(zero_fraction, theory.p_zero,
                    math.sqrt(theory.p_zero * (1 - theory.p_zero) / y.size), "p_zero")


def test_relu_extreme_means_are_finite_and_sensible():
    far_negative = th.relu_gaussian_moments(-40.0, 1.0)
    assert far_negative.p_zero == 1.0
    assert far_negative.mean == 0.0 and far_negative.var == 0.0
    deep = th.relu_gaussian_moments(-10.0, 1.0)  # tail: tiny but positive, no cancellation to < 0
    assert 0 < deep.mean < 1e-20 and 0 < deep.var < 1e-20
    assert deep.p_zero == pytest.approx(1.0)
    far_positive = th.relu_gaussian_moments(1e6, 2.0)  # ReLU is the identity here
    assert far_positive.mean == pytest.approx(1e6)
    assert far_positive.var == pytest.approx(4.0)
    assert far_positive.p_zero == 0.0


@settings(max_examples=60, deadline=None)
@given(mu=st.floats(-20, 20), sigma=st.floats(1e-3, 50), k=st.floats(1e-2, 1e2))
def test_relu_moments_properties(mu, sigma, k):
    m = th.relu_gaussian_moments(mu, sigma)
    assert m.var >= 0 and 0 <= m.p_zero <= 1
    assert m.mean >= max(mu, 0.0) - 1e-9 * max(1.0, abs(mu))  # Jensen: E max(X,0) >= max(EX, 0)
    assert m.var <= sigma**2 * (1 + 1e-9)  # ReLU is 1-Lipschitz, so it cannot add variance
    # ReLU is positively homogeneous: ReLU(kX) = k ReLU(X).
    scaled = th.relu_gaussian_moments(k * mu, k * sigma)
    assert scaled.mean == pytest.approx(k * m.mean, rel=1e-9, abs=1e-300)
    assert scaled.std == pytest.approx(k * m.std, rel=1e-6, abs=1e-12 * k * sigma)
    assert scaled.p_zero == pytest.approx(m.p_zero, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("mu,sigma", RELU_CASES)
def test_relu_pdf_plus_point_mass_integrates_to_one(mu, sigma):
    theory = th.relu_gaussian_moments(mu, sigma)
    grid = np.linspace(0.0, max(mu, 0.0) + 14.0 * sigma, 400_001)
    dens = th.relu_gaussian_pdf(grid, mu, sigma)
    assert isinstance(dens, np.ndarray) and dens.shape == grid.shape
    assert np.trapezoid(dens, grid) + theory.p_zero == pytest.approx(1.0, abs=1e-8)
    # The density's moments (with the atom at 0 contributing nothing) are the closed forms.
    assert np.trapezoid(grid * dens, grid) == pytest.approx(theory.mean, rel=1e-7, abs=1e-10)
    assert np.trapezoid(grid**2 * dens, grid) == pytest.approx(
        theory.var + theory.mean**2, rel=1e-7, abs=1e-10)


def test_relu_pdf_values_and_histogram():
    assert th.relu_gaussian_pdf(-1e-9) == 0.0
    assert th.relu_gaussian_pdf(-5.0, mu=3.0) == 0.0
    assert th.relu_gaussian_pdf(0.0) == pytest.approx(1 / math.sqrt(2 * math.pi))
    assert isinstance(th.relu_gaussian_pdf(1.0), float)
    assert th.relu_gaussian_pdf(1.0, 1.0, 2.0) == pytest.approx(1 / (2 * math.sqrt(2 * math.pi)))
    # Histogram of simulated positive outputs (as a density of ALL samples) vs the curve.
    mu, sigma = -0.5, 1.5
    y = np.maximum(rng_for("relu-hist").normal(mu, sigma, N_SAMPLES), 0.0)
    edges = np.linspace(0.25, 4.0, 16)
    counts, _ = np.histogram(y, bins=edges)
    width = np.diff(edges)
    fraction = counts / y.size
    centres = 0.5 * (edges[1:] + edges[:-1])
    # Simpson's rule for the expected bin probability (the pdf is smooth inside each bin).
    lo, hi = edges[:-1], edges[1:]
    def pdf(x):
        return th.relu_gaussian_pdf(x, mu, sigma)

    expected = width / 6 * (pdf(lo) + 4 * pdf(centres) + pdf(hi))
    se = np.sqrt(expected * (1 - expected) / y.size)
    assert np.all(np.abs(fraction - expected) <= K_SE * se), np.abs(fraction - expected) / se


# =========================================================================== EMA of a stream

def simulate_torch_ema(rng, momentum, steps, n_streams, initial, true_value, stat_sd):
    """PyTorch's update on iid N(true, stat_sd^2) batch statistics; returns (steps + 1, streams)."""
    running = np.full(n_streams, float(initial))
    out = np.empty((steps + 1, n_streams))
    out[0] = running
    for t in range(1, steps + 1):
        batch_stat = rng.normal(true_value, stat_sd, n_streams)
        running = (1.0 - momentum) * running + momentum * batch_stat
        out[t] = running
    return out


EMA_STEPS = {0.01: 1000, 0.1: 200, 0.5: 40}


@pytest.mark.parametrize("momentum", [0.01, 0.1, 0.5])
def test_ema_against_simulated_streams(momentum):
    initial, true_value, stat_var = 1.0, 3.0, 0.8
    steps, n_streams = EMA_STEPS[momentum], 20_000
    paths = simulate_torch_ema(rng_for("ema", momentum), momentum, steps, n_streams,
                               initial, true_value, math.sqrt(stat_var))
    half = th.ema_half_life(momentum)
    checkpoints = sorted({0, 1, 2, int(half / 2), int(half), int(2 * half), int(4 * half), steps})

    for t in checkpoints:
        # Mean trajectory.
        mean, se = mean_se(paths[t])
        expected = th.ema_expected(initial, true_value, momentum, t)
        assert_close_se(mean, expected, se, f"E[running_{t}]")
        # Spread across independent streams at finite t (running_t is Gaussian: se = var*sqrt(2/(S-1))).
        finite_var = th.ema_variance(momentum, t, stat_var)
        var = paths[t].var(ddof=1)
        se_var = finite_var * math.sqrt(2 / (n_streams - 1))
        assert_close_se(var, finite_var, se_var, f"Var(running_{t})")

    # The lag is what separates the trajectory from its target.
    assert th.ema_expected(initial, true_value, momentum, int(half)) == pytest.approx(
        true_value + (initial - true_value) * th.ema_lag(momentum, int(half)))

    # Late time: the stationary variance m / (2 - m) * stat_var.
    stationary = th.ema_stationary_variance(momentum, stat_var)
    assert stationary == pytest.approx(momentum / (2 - momentum) * stat_var)
    assert th.ema_variance(momentum, steps, stat_var) == pytest.approx(stationary, rel=1e-6)
    var = paths[-1].var(ddof=1)
    assert_close_se(var, stationary, stationary * math.sqrt(2 / (n_streams - 1)), "stationary variance")

    # And the test can tell finite-t from stationary: at one half-life the variance is 3/4 of it.
    t_half = int(round(half)) if momentum < 0.5 else 1
    finite = th.ema_variance(momentum, t_half, stat_var)
    se = finite * math.sqrt(2 / (n_streams - 1))
    assert stationary - finite > 2 * K_SE * se
    assert abs(paths[t_half].var(ddof=1) - finite) <= K_SE * se


def test_running_bn_statistics_of_real_batches():
    """PyTorch's BN update on actual batches: running_mean and the *unbiased* running_var."""
    rng = rng_for("bn-running")
    momentum, n, steps, n_streams, mu, s2 = 0.1, 4, 150, 20_000, 2.0, 1.5
    running_mean = np.zeros(n_streams)
    running_var = np.ones(n_streams)
    for _ in range(steps):
        batch = rng.normal(mu, math.sqrt(s2), (n_streams, n))
        running_mean = (1 - momentum) * running_mean + momentum * batch.mean(axis=1)
        running_var = (1 - momentum) * running_var + momentum * batch.var(axis=1, ddof=1)

    m, se = mean_se(running_mean)
    assert_close_se(m, th.ema_expected(0.0, mu, momentum, steps), se, "running_mean level")
    v, se = var_se(running_mean)
    expected = th.ema_variance(momentum, steps, th.batch_mean_variance(s2, n))
    assert_close_se(v, expected, se, "running_mean noise")

    m, se = mean_se(running_var)
    assert_close_se(m, th.ema_expected(1.0, s2, momentum, steps), se, "running_var level (unbiased)")
    v, se = var_se(running_var)
    expected = th.ema_stationary_variance(momentum, th.batch_var_variance(s2, n, unbiased=True))
    assert_close_se(v, expected, se, "running_var noise")


def test_cumulative_average_against_simulation():
    """PyTorch's momentum=None: factor 1 / num_batches_tracked, i.e. the cumulative mean."""
    rng = rng_for("cumulative")
    initial, true_value, stat_var, steps, n_streams = 1.0, -2.0, 0.5, 64, 50_000
    running = np.full(n_streams, initial)
    for t in range(1, steps + 1):
        factor = 1.0 / t
        batch_stat = rng.normal(true_value, math.sqrt(stat_var), n_streams)
        running = (1 - factor) * running + factor * batch_stat
        if t in (1, 2, 8, 64):
            m, se = mean_se(running)
            assert_close_se(m, true_value, se, f"cumulative mean after {t}")  # the start is gone
            expected = th.cumulative_average_variance(t, stat_var)
            assert expected == pytest.approx(stat_var / t)
            assert_close_se(running.var(ddof=1), expected, expected * math.sqrt(2 / (n_streams - 1)),
                            f"cumulative variance after {t}")


def test_ema_exact_values_and_edges():
    assert th.ema_lag(0.1, 0) == 1.0
    assert th.ema_lag(0.1, 10) == pytest.approx(0.9**10)
    assert th.ema_lag(1.0, 0) == 1.0 and th.ema_lag(1.0, 3) == 0.0
    assert th.ema_lag(0.0, 1e9) == 1.0
    assert th.ema_lag(0.5, math.inf) == 0.0
    lags = th.ema_lag(0.5, np.arange(4))
    assert isinstance(lags, np.ndarray) and np.allclose(lags, [1, 0.5, 0.25, 0.125])
    assert isinstance(th.ema_lag(0.5, 2), float)
    assert th.ema_lag(np.array([0.1, 0.5]), 1) == pytest.approx([0.9, 0.5])

    assert th.ema_expected(1.0, 0.0, 0.1, 0) == 1.0
    assert th.ema_expected(1.0, 0.0, 0.1, math.inf) == 0.0
    assert th.ema_expected(5.0, 5.0, 0.3, 7) == 5.0

    assert th.ema_variance(0.1, 0, 2.0) == 0.0  # started from a constant
    assert th.ema_variance(1.0, 1, 2.0) == 2.0  # only the last batch
    assert th.ema_variance(0.1, math.inf, 2.0) == pytest.approx(th.ema_stationary_variance(0.1, 2.0))
    assert th.ema_stationary_variance(0.0, 2.0) == 0.0
    assert th.ema_stationary_variance(1.0, 2.0) == 2.0
    ts = np.arange(0, 100)
    v = th.ema_variance(0.1, ts, 1.0)
    assert np.all(np.diff(v) > 0) and np.all(v < th.ema_stationary_variance(0.1, 1.0))

    assert th.ema_half_life(0.0) == math.inf
    assert th.ema_half_life(1.0) == 0.0
    assert th.ema_half_life(0.5) == pytest.approx(1.0)
    assert th.ema_half_life(0.1) == pytest.approx(math.log(0.5) / math.log(0.9))
    assert round(th.ema_half_life(0.1), 2) == 6.58
    assert th.ema_lag(0.1, th.ema_half_life(0.1)) == pytest.approx(0.5)
    hl = th.ema_half_life([0.0, 0.01, 0.5, 1.0])
    assert isinstance(hl, np.ndarray) and hl[0] == math.inf and hl[3] == 0.0
    assert hl[1] == pytest.approx(math.log(0.5) / math.log(0.99))

    assert th.cumulative_average_variance(np.array([1, 2, 4]), 4.0) == pytest.approx([4, 2, 1])


@settings(max_examples=60, deadline=None)
@given(m=st.floats(1e-4, 1.0), t=st.integers(0, 10_000), s=st.floats(0, 1e3))
def test_ema_variance_is_the_sum_of_squared_weights(m, t, s):
    # Var = s * sum_k w_k^2 with w_k = m (1 - m)^(t - k), k = 1..t.
    j = np.arange(t)
    direct = s * float(np.sum((m * (1 - m) ** j) ** 2))
    assert th.ema_variance(m, t, s) == pytest.approx(direct, rel=1e-9, abs=1e-300)
    assert th.ema_variance(m, t, s) <= th.ema_stationary_variance(m, s) * (1 + 1e-12)


# =========================================================================== batch statistics

@pytest.mark.parametrize("n", [2, 5, 32])
def test_batch_statistics_variance_against_simulation(n):
    mu, s2 = 0.7, 2.5
    n_batches = N_SAMPLES // n
    x = rng_for("batch", n).normal(mu, math.sqrt(s2), (n_batches, n))

    m, se = var_se(x.mean(axis=1))
    assert_close_se(m, th.batch_mean_variance(s2, n), se, "Var(batch mean)")

    unbiased = x.var(axis=1, ddof=1)
    biased = x.var(axis=1, ddof=0)
    v, se = var_se(unbiased)
    assert_close_se(v, th.batch_var_variance(s2, n, unbiased=True), se, "Var(unbiased batch var)")
    v, se = var_se(biased)
    assert_close_se(v, th.batch_var_variance(s2, n, unbiased=False), se, "Var(biased batch var)")

    m, se = mean_se(biased)
    assert_close_se(m, th.biased_variance_expectation(s2, n), se, "E[biased batch var]")
    m, se = mean_se(unbiased)
    assert_close_se(m, s2, se, "E[unbiased batch var]")


def test_batch_statistics_exact_values():
    assert th.batch_mean_variance(4.0, 8) == 0.5
    assert th.batch_var_variance(1.0, 2, unbiased=True) == 2.0
    assert th.batch_var_variance(3.0, 10, True) == pytest.approx(2 * 9 / 9)
    assert th.batch_var_variance(1.0, 1, unbiased=False) == 0.0  # one sample: variance 0, always
    assert th.batch_var_variance(1.0, 2, unbiased=False) == pytest.approx(0.5)
    assert th.batch_var_variance(3.0, 10, False) == pytest.approx(2 * 9 * 9 / 100)
    # The biased one is the unbiased one times (n - 1)/n, so its variance is ((n - 1)/n)^2 times.
    for n in (2, 3, 64):
        assert th.batch_var_variance(1.7, n, False) == pytest.approx(
            ((n - 1) / n) ** 2 * th.batch_var_variance(1.7, n, True))
    assert th.biased_variance_expectation(1.0, 2) == 0.5
    assert th.biased_variance_expectation(3.0, 1) == 0.0
    assert th.biased_variance_expectation(1.0, np.array([2, 4])) == pytest.approx([0.5, 0.75])


# =========================================================================== momentum conventions

def test_keras_torch_momentum_round_trip():
    assert th.keras_to_torch_momentum(0.99) == pytest.approx(0.01)
    assert th.torch_to_keras_momentum(0.1) == pytest.approx(0.9)
    ms = np.linspace(0, 1, 101)
    there_and_back = th.torch_to_keras_momentum(th.keras_to_torch_momentum(ms))
    back_and_there = th.keras_to_torch_momentum(th.torch_to_keras_momentum(ms))
    assert np.allclose(there_and_back, ms, rtol=0, atol=1e-15)
    assert np.allclose(back_and_there, ms, rtol=0, atol=1e-15)


def test_keras_update_with_099_equals_torch_update_with_001():
    stream = rng_for("keras").normal(3.0, 1.0, 500)
    keras_m = 0.99
    torch_m = th.keras_to_torch_momentum(keras_m)
    assert torch_m == pytest.approx(0.01)
    moving = running = 0.0
    for x in stream:
        moving = moving * keras_m + x * (1 - keras_m)  # Keras: momentum weighs the old value
        running = (1 - torch_m) * running + torch_m * x  # PyTorch: momentum weighs the new batch
        assert running == pytest.approx(moving, rel=1e-12, abs=1e-15)
    # And the same value fed to the wrong convention is a different (much faster) average.
    wrong = 0.0
    for x in stream:
        wrong = (1 - keras_m) * wrong + keras_m * x
    assert abs(wrong - running) > 0.1


def test_conventions_match_real_torch_batchnorm():
    """Ground truth for the EMA convention and the unbiased running_var, if torch is present."""
    torch = pytest.importorskip("torch")
    bn = torch.nn.BatchNorm1d(1, momentum=0.1)
    batch = torch.tensor([[1.0], [2.0], [4.0], [7.0]], dtype=torch.float64)
    bn = bn.double().train()
    bn(batch)
    values = batch.numpy()[:, 0]
    assert bn.running_mean.item() == pytest.approx(th.ema_expected(0.0, values.mean(), 0.1, 1))
    assert bn.running_var.item() == pytest.approx(th.ema_expected(1.0, values.var(ddof=1), 0.1, 1))
    bn_none = torch.nn.BatchNorm1d(1, momentum=None).double().train()
    bn_none(batch)
    bn_none(batch * 3)
    assert bn_none.running_mean.item() == pytest.approx((values.mean() + 3 * values.mean()) / 2)


# =========================================================================== dropout variance shift

@pytest.mark.parametrize("p", [0.5, 0.6, 0.7, 0.8, 0.9])
def test_dropout_variance_shift_against_simulation(p):
    c, v = 1.5, 0.7
    rng = rng_for("dropout", p)
    x = rng.normal(c, math.sqrt(v), N_SAMPLES)
    mask = rng.random(N_SAMPLES) < p
    y_train = x * mask / p  # inverted dropout, train mode
    y_test = x  # eval mode: the identity

    m, se = mean_se(y_train)
    assert_close_se(m, c, se, "train-mode mean is unchanged")
    var_train, se = var_se(y_train)
    assert_close_se(var_train, th.dropout_train_variance(c, v, p), se, "train-mode variance")
    var_test, se = var_se(y_test)
    assert_close_se(var_test, th.dropout_test_variance(c, v, p), se, "test-mode variance")
    assert th.dropout_variance_ratio(c, v, p) == pytest.approx(
        th.dropout_train_variance(c, v, p) / th.dropout_test_variance(c, v, p))
    # The measured ratio, to a few percent (its own standard error is not worth the code).
    assert var_train / var_test == pytest.approx(th.dropout_variance_ratio(c, v, p), rel=0.02)


def test_dropout_exact_values():
    assert th.dropout_train_variance(0.0, 1.0, 0.5) == 2.0
    assert th.dropout_variance_ratio(0.0, 2.0, 0.8) == pytest.approx(1 / 0.8)  # c = 0: 1/p
    assert th.dropout_train_variance(2.0, 1.0, 1.0) == 1.0  # p = 1: no dropout
    assert th.dropout_variance_ratio(2.0, 1.0, 1.0) == 1.0
    assert th.dropout_train_variance(2.0, 1.0, 0.5) == pytest.approx((4 + 1) / 0.5 - 4)
    assert th.dropout_test_variance(2.0, 1.0, 0.5) == 1.0
    ps = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    ratios = th.dropout_variance_ratio(1.0, 1.0, ps)
    assert isinstance(ratios, np.ndarray) and np.all(np.diff(ratios) < 0) and np.all(ratios > 1)
    tests = th.dropout_test_variance(0.0, 3.0, ps)
    assert isinstance(tests, np.ndarray) and np.all(tests == 3.0)


# =========================================================================== invalid arguments

INVALID = {
    "sigma zero": lambda: th.relu_gaussian_moments(0.0, 0.0),
    "sigma negative": lambda: th.relu_gaussian_moments(0.0, -1.0),
    "sigma nan": lambda: th.relu_gaussian_moments(0.0, math.nan),
    "sigma inf": lambda: th.relu_gaussian_moments(0.0, math.inf),
    "mu nan": lambda: th.relu_gaussian_moments(math.nan, 1.0),
    "mu text": lambda: th.relu_gaussian_moments("a", 1.0),
    "mu array": lambda: th.relu_gaussian_moments([0.0, 1.0], 1.0),
    "pdf sigma zero": lambda: th.relu_gaussian_pdf([0.0, 1.0], 0.0, 0.0),
    "pdf x nan": lambda: th.relu_gaussian_pdf(math.nan),
    "lag momentum > 1": lambda: th.ema_lag(1.1, 3),
    "lag momentum < 0": lambda: th.ema_lag(-0.1, 3),
    "lag momentum None": lambda: th.ema_lag(None, 3),
    "lag momentum nan": lambda: th.ema_lag(math.nan, 3),
    "lag negative t": lambda: th.ema_lag(0.1, -1),
    "lag array with bad entry": lambda: th.ema_lag(0.1, [1, 2, -3]),
    "expected momentum": lambda: th.ema_expected(0.0, 1.0, 2.0, 3),
    "expected initial nan": lambda: th.ema_expected(math.nan, 1.0, 0.1, 3),
    "stationary negative variance": lambda: th.ema_stationary_variance(0.1, -1.0),
    "stationary momentum": lambda: th.ema_stationary_variance(1.5, 1.0),
    "ema_variance negative t": lambda: th.ema_variance(0.1, -2, 1.0),
    "ema_variance negative variance": lambda: th.ema_variance(0.1, 2, -1.0),
    "half-life momentum > 1": lambda: th.ema_half_life(1.01),
    "half-life momentum < 0": lambda: th.ema_half_life(-0.01),
    "half-life None": lambda: th.ema_half_life(None),
    "cumulative t = 0": lambda: th.cumulative_average_variance(0, 1.0),
    "cumulative negative variance": lambda: th.cumulative_average_variance(3, -1.0),
    "batch mean n = 0": lambda: th.batch_mean_variance(1.0, 0),
    "batch mean fractional n": lambda: th.batch_mean_variance(1.0, 2.5),
    "batch mean negative s2": lambda: th.batch_mean_variance(-1.0, 4),
    "unbiased var n = 1": lambda: th.batch_var_variance(1.0, 1, unbiased=True),
    "biased var n = 0": lambda: th.batch_var_variance(1.0, 0, unbiased=False),
    "var unbiased not bool": lambda: th.batch_var_variance(1.0, 4, unbiased="yes"),
    "biased expectation n = 0": lambda: th.biased_variance_expectation(1.0, 0),
    "keras > 1": lambda: th.keras_to_torch_momentum(1.5),
    "torch < 0": lambda: th.torch_to_keras_momentum(-0.1),
    "dropout p = 0": lambda: th.dropout_train_variance(0.0, 1.0, 0.0),
    "dropout p > 1": lambda: th.dropout_train_variance(0.0, 1.0, 1.1),
    "dropout p negative": lambda: th.dropout_test_variance(0.0, 1.0, -0.5),
    "dropout negative v": lambda: th.dropout_train_variance(0.0, -1.0, 0.5),
    "dropout ratio v = 0": lambda: th.dropout_variance_ratio(1.0, 0.0, 0.5),
    "dropout ratio p = 0": lambda: th.dropout_variance_ratio(1.0, 1.0, 0.0),
    "dropout c nan": lambda: th.dropout_train_variance(math.nan, 1.0, 0.5),
}


@pytest.mark.parametrize("call", INVALID.values(), ids=INVALID.keys())
def test_invalid_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_none_momentum_message_points_to_cumulative_average():
    with pytest.raises(ValueError, match="cumulative_average_variance"):
        th.ema_variance(None, 3, 1.0)
