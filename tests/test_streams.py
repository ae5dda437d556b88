"""The simulated stream against its oracles: torch's BatchNorm1d fed the same batches (the running
estimates), numpy/torch batch statistics, and Monte-Carlo over many channels (the theory band)."""
import functools
import math

import numpy as np
import pytest
import torch

from bnviz import theory
from bnviz.experiments import streams
from bnviz.experiments.streams import StreamSpec

SPECS = [
    StreamSpec(),                                                       # stationary, N(1, 2^2)
    StreamSpec(mu=-1.0, sigma=0.5, batch_size=3, n_batches=600, drift="linear", mean_shift=3.0, std_factor=2.0,
               seed=5, channels=4),                                     # > one 256-batch block
    StreamSpec(batch_size=2, n_batches=80, drift="step", mean_shift=-2.0, std_factor=0.5, seed=9, channels=3),
]


def _torch_running(spec: StreamSpec, momentum, dtype):
    """torch.nn.BatchNorm1d's buffers after each batch of the stream (rows 1..T), plus the start."""
    x = torch.from_numpy(streams.batches(spec)).to(dtype)
    bn = torch.nn.BatchNorm1d(spec.channels, momentum=momentum, dtype=dtype)
    bn.train()
    means, variances = [bn.running_mean.clone()], [bn.running_var.clone()]
    with torch.no_grad():
        for batch in x:
            bn(batch)
            means.append(bn.running_mean.clone())
            variances.append(bn.running_var.clone())
    return torch.stack(means).double().numpy(), torch.stack(variances).double().numpy()


@pytest.mark.parametrize("spec", SPECS, ids=["stationary", "linear-drift", "step-drift"])
@pytest.mark.parametrize("momentum", [0.1, 0.9, None])
def test_running_estimates_equal_torch_batchnorm1d(spec, momentum):
    stream = streams.simulate(spec)
    mean = streams.running_estimate(stream.batch_mean, momentum, streams.INITIAL["mean"])
    var = streams.running_estimate(stream.batch_var, momentum, streams.INITIAL["var"])
    t_mean, t_var = _torch_running(spec, momentum, torch.float64)
    np.testing.assert_allclose(mean, t_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var, t_var, rtol=1e-10, atol=1e-12)
    # The app's numbers are float64; torch's default float32 agrees to its own precision.
    f_mean, f_var = _torch_running(spec, momentum, torch.float32)
    np.testing.assert_allclose(mean, f_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var, f_var, rtol=1e-4, atol=1e-5)


def test_batch_statistics_equal_torch_and_the_biased_one_is_what_bn_normalizes_with():
    spec = StreamSpec(batch_size=5, n_batches=20, channels=3, seed=2)
    stream = streams.simulate(spec)
    x = torch.from_numpy(streams.batches(spec))
    var_u, mean = torch.var_mean(x, dim=1, correction=1)
    var_b = torch.var(x, dim=1, correction=0)
    np.testing.assert_allclose(stream.batch_mean, mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(stream.batch_var, var_u.numpy(), rtol=1e-12)
    np.testing.assert_allclose(stream.batch_var_biased, var_b.numpy(), rtol=1e-12)
    # BN in training mode divides by sqrt(biased variance + eps): recover it from the output.
    bn = torch.nn.BatchNorm1d(3, eps=1e-12, affine=False, dtype=torch.float64).train()
    y = bn(x[0])
    implied = ((x[0] - mean[0]) / y).mean(dim=0) ** 2
    np.testing.assert_allclose(implied.numpy(), stream.batch_var_biased[0], rtol=1e-9)


def test_true_moments_follow_the_drift():
    spec = StreamSpec(mu=1.0, sigma=2.0, n_batches=5, drift="linear", mean_shift=4.0, std_factor=3.0)
    mean, var = streams.true_moments(spec)
    np.testing.assert_allclose(mean, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(np.sqrt(var), [2, 3, 4, 5, 6])
    step = StreamSpec(mu=0.0, sigma=1.0, n_batches=4, drift="step", mean_shift=1.0, std_factor=2.0)
    mean, var = streams.true_moments(step)
    np.testing.assert_allclose(mean, [0, 0, 1, 1])
    np.testing.assert_allclose(var, [1, 1, 4, 4])
    assert StreamSpec(drift="step", mean_shift=0.0, std_factor=1.0).stationary


MC_SPECS = [
    StreamSpec(mu=1.0, sigma=2.0, batch_size=4, n_batches=120, channels=6000, seed=11),
    StreamSpec(mu=0.0, sigma=1.0, batch_size=8, n_batches=120, drift="linear", mean_shift=3.0, std_factor=2.0,
               channels=6000, seed=12),
    StreamSpec(mu=2.0, sigma=1.0, batch_size=2, n_batches=120, drift="step", mean_shift=-2.0, std_factor=0.5,
               channels=6000, seed=13),
]


_simulate = functools.cache(streams.simulate)


@pytest.mark.parametrize("spec", MC_SPECS, ids=["stationary", "linear", "step"])
@pytest.mark.parametrize("stat", ["mean", "var", "var_biased"])
@pytest.mark.parametrize("momentum", [0.01, 0.1, 0.5, None])
def test_theory_band_matches_monte_carlo_over_channels(spec, stat, momentum):
    """6,000 channels are 6,000 independent streams: their average and spread at each t must be the
    band's expected value and standard deviation."""
    stream = _simulate(spec)
    est = streams.running_estimate(stream.batch_stat(stat), momentum, streams.INITIAL[stat])
    expected, sd = streams.expected_band(stream, stat, momentum)
    c = spec.channels
    mc_mean, mc_sd = est.mean(axis=1), est.std(axis=1, ddof=1)
    # Mean within 5 standard errors; the spread within 10% (the std of a sample std of a
    # variance-EMA is larger than Gaussian's 1/sqrt(2c), because chi-square tails are heavy).
    assert np.all(np.abs(mc_mean - expected) <= 5 * sd / math.sqrt(c) + 1e-12)
    np.testing.assert_allclose(mc_sd[1:], sd[1:], rtol=0.1)
    assert sd[0] == 0 and mc_sd[0] == 0


def test_biased_variance_centres_on_n_minus_1_over_n():
    spec = StreamSpec(mu=0.0, sigma=3.0, batch_size=2, n_batches=2000, channels=200, seed=3)
    stream = streams.simulate(spec)
    assert abs(stream.batch_var_biased.mean() / 9.0 - 0.5) < 0.02
    assert abs(stream.batch_var.mean() / 9.0 - 1.0) < 0.04
    expected, _ = streams.expected_band(stream, "var_biased", 0.1)
    assert expected[-1] == pytest.approx(theory.biased_variance_expectation(9.0, 2), rel=1e-9)


def test_stationary_band_is_the_closed_form_of_theory():
    stream = streams.simulate(StreamSpec(mu=1.0, sigma=2.0, batch_size=16, n_batches=50))
    t = np.arange(51)
    expected, sd = streams.expected_band(stream, "mean", 0.1)
    np.testing.assert_allclose(expected, 1.0 - 1.0 * 0.9 ** t)
    np.testing.assert_allclose(sd ** 2, 0.1 / 1.9 * (1 - 0.9 ** (2 * t)) * 4.0 / 16)
    expected, sd = streams.expected_band(stream, "var", None)
    assert expected[0] == 1.0 and np.all(expected[1:] == 4.0)
    np.testing.assert_allclose(sd[1:] ** 2, 2 * 16.0 / 15 / t[1:])


def test_linear_drift_lag_is_one_minus_m_over_m_batches():
    spec = StreamSpec(mu=0.0, sigma=1.0, n_batches=2001, drift="linear", mean_shift=20.0)
    stream = streams.simulate(spec)
    slope = 20.0 / 2000
    for m in (0.05, 0.1, 0.5):
        expected, _ = streams.expected_band(stream, "mean", m)
        assert stream.true_mean[-1] - expected[-1] == pytest.approx(slope * streams.drift_lag(m), rel=1e-6)
    assert streams.drift_lag(0.01) == pytest.approx(99)
    with pytest.raises(ValueError):
        streams.drift_lag(0.0)


def test_edge_momenta_zero_never_moves_and_one_keeps_the_last_batch():
    stream = streams.simulate(StreamSpec(n_batches=30, channels=2))
    assert np.all(streams.running_estimate(stream.batch_mean, 0.0, 0.0) == 0.0)
    np.testing.assert_allclose(streams.running_estimate(stream.batch_var, 1.0, 1.0)[1:], stream.batch_var)
    with pytest.raises(ValueError):
        streams.running_estimate(stream.batch_mean, 1.5, 0.0)


def test_same_seed_same_stream_and_bad_specs_explain_themselves():
    a, b = streams.batches(StreamSpec(seed=4)), streams.batches(StreamSpec(seed=4))
    assert np.array_equal(a, b) and not np.array_equal(a, streams.batches(StreamSpec(seed=5)))
    found = streams.problems(StreamSpec(batch_size=1))
    assert len(found) == 1 and "n - 1 = 0" in found[0]
    with pytest.raises(ValueError, match="batch of one"):
        streams.simulate(StreamSpec(batch_size=1))
    assert streams.problems(StreamSpec(sigma=0.0)) and streams.problems(StreamSpec(drift="wobble"))
    assert streams.problems(StreamSpec(n_batches=streams.MAX_BATCHES + 1))
    # torch agrees that one value per channel cannot train a BN layer.
    with pytest.raises(ValueError):
        torch.nn.BatchNorm1d(1).train()(torch.zeros(1, 1))
