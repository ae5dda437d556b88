"""The ReLU-after-BN figures: their theory against Monte-Carlo and bnviz.theory, their data against
the History, and the theory against the recorded network at initialization."""
import copy
import dataclasses
import math

import numpy as np
import pytest

from bnviz import theory
from bnviz.config import Config
from bnviz.figures import relu as figs
from bnviz.record import NormStats
from bnviz.train import train


def _norm(gamma, beta) -> NormStats:
    return NormStats(batch_mean=None, batch_var=None, running_mean=None, running_var=None,
                     weight=np.asarray(gamma, dtype=np.float32), bias=np.asarray(beta, dtype=np.float32))


@pytest.fixture(scope="module")
def layer_params():
    rng = np.random.default_rng(0)
    gamma = rng.normal(1.0, 0.4, 40).astype(np.float32)
    gamma[0] = -gamma[0]  # a negative gamma flips a symmetric input: same law as |gamma|
    beta = rng.normal(-0.2, 0.6, 40).astype(np.float32)
    return gamma, beta


def test_zero_probabilities_match_theory(layer_params):
    gamma, beta = layer_params
    got = figs.zero_probabilities(_norm(gamma, beta))
    want = [theory.relu_gaussian_moments(float(b), abs(float(g))).p_zero for g, b in zip(gamma, beta)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("keep", [1.0, 0.6])
def test_pooled_prediction_matches_monte_carlo(layer_params, keep):
    gamma, beta = layer_params
    rng = np.random.default_rng(1)
    z = rng.standard_normal((200_000, gamma.size))
    y = np.maximum(gamma * z + beta, 0.0)
    if keep < 1:
        y = y * (rng.random(y.shape) < keep) / keep
    pred = figs.predict_layer(_norm(gamma, beta), keep)
    assert pred.mean == pytest.approx(y.mean(), abs=3e-3)
    assert pred.std == pytest.approx(y.std(), rel=3e-3)
    assert pred.p_zero == pytest.approx(np.mean(y == 0), abs=2e-3)


def test_predicted_density_integrates_to_the_non_zero_share(layer_params):
    gamma, beta = layer_params
    norm = _norm(gamma, beta)
    x = np.linspace(0.0, 12.0, 24_001)
    density = figs.predicted_density(norm, x)
    area = float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(x)))
    assert area == pytest.approx(1 - figs.predict_layer(norm).p_zero, abs=1e-6)


def test_standard_case_is_relu_of_a_unit_gaussian():
    pred = figs.predict_layer(_norm(np.ones(8), np.zeros(8)))
    assert pred.mean == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-12)
    assert pred.std == pytest.approx(math.sqrt(0.5 - 1 / (2 * math.pi)), rel=1e-12)
    assert pred.p_zero == 0.5


def test_orderings_and_dropout_keep():
    assert figs.is_bn_relu(Config()) and not figs.is_bn_relu(Config(placement="after"))
    assert not figs.is_bn_relu(Config(norm="none")) and not figs.is_bn_relu(Config(activation="tanh"))
    assert figs.keep_after_relu(Config(dropout=0.3)) == pytest.approx(0.7)
    assert figs.keep_after_relu(Config(dropout=0.3, dropout_position="before_norm")) == 1.0
    assert figs.keep_after_relu(Config(dropout=0.3, dropout_position="before_output")) == 1.0


@pytest.fixture(scope="module")
def at_init():
    """BN->ReLU, ReLU->BN and no BN after one step: the recorded step 0 has gamma = 1, beta = 0."""
    base = Config(steps=1)
    return {"BN→ReLU": train(base).history, "ReLU→BN": train(base.replace(placement="after")).history,
            "no BN": train(base.without_norm()).history}


def test_bn_relu_zero_fraction_at_initialization_is_one_half(at_init):
    """The independent check of the recording: BN gives every unit batch mean 0 and variance 1, so
    about half of the ReLU's outputs are exactly 0 in every layer. Not exactly half: a standardized
    batch is not Gaussian (the binomial standard error alone is ~0.006 for 6,400 values), hence 0.05."""
    h = at_init["BN→ReLU"]
    snap = h.snapshots[0]
    assert snap.step == 0
    for layer in range(len(h.layer_names)):
        norm = snap.norms[layer]
        np.testing.assert_array_equal(norm.weight, 1.0)
        np.testing.assert_array_equal(norm.bias, 0.0)
        st = snap.taps[(layer, "post_activation")]
        pred = figs.predict_layer(norm)
        assert pred.p_zero == 0.5
        assert abs(st.zero_frac - pred.p_zero) < 0.05, layer
        assert st.mean == pytest.approx(pred.mean, abs=0.05)
        assert st.std == pytest.approx(pred.std, abs=0.05)


def test_theory_overlays_are_drawn_where_and_as_predicted(at_init):
    h = at_init["BN→ReLU"]
    fig = figs.rectified_gaussian_check(h, 0)
    st = h.snapshots[0].taps[(0, "post_activation")]
    assert fig.layout.annotations[len(h.layer_names)].text == f"exactly 0:<br>{st.zero_frac:.1%} recorded<br>50.0% predicted"
    bars = [t for t in fig.data if t.type == "bar"]
    lines = [t for t in fig.data if t.type == "scatter"]
    np.testing.assert_allclose(bars[0].y, figs.nonzero_density(st, h.edges["post_activation"]))
    np.testing.assert_allclose(lines[0].y, theory.relu_gaussian_pdf(np.asarray(lines[0].x), 0.0, 1.0), rtol=1e-6)

    fig = figs.next_layer_input(at_init, 0, 0)
    [mark] = [t for t in fig.data if t.name.startswith("rectified Gaussian")]
    assert list(mark.x) == ["BN→ReLU"] and mark.y[0] == 0.5
    zero_bars = {t.x[0]: t.y[0] for t in fig.data if t.type == "bar"}
    assert zero_bars == {label: hh.snapshots[0].taps[(0, "output")].zero_frac for label, hh in at_init.items()}


def test_nonzero_density_takes_out_exactly_the_zeros(at_init):
    """Density x bin width sums to the share of values inside the bins minus the exact zeros."""
    for h in at_init.values():
        for (layer, tap), st in h.snapshots[0].taps.items():
            edges = h.edges[tap]
            density = figs.nonzero_density(st, edges)
            share = float(np.sum(density * np.diff(edges.astype(np.float64))))
            zeros_inside = st.zero_frac if edges[0] <= 0 < edges[-1] else 0.0
            assert share == pytest.approx((st.n - st.below - st.above) / st.n - zeros_inside, abs=1e-9)
            assert density.min() >= 0


def test_dropout_after_the_relu_is_in_the_prediction_and_in_the_recording():
    """Inverted dropout p = 0.5 after BN->ReLU zeroes half of the non-zero half: 75% zeros at step 0."""
    h = train(Config(steps=1, dropout=0.5)).history
    fig = figs.relu_moments({"BN→ReLU": h}, 0)
    predicted = [t for t in fig.data if t.legendgroup == "theory"]
    assert predicted[2].y == pytest.approx((0.75,) * 3)
    assert predicted[0].y == pytest.approx((1 / math.sqrt(2 * math.pi),) * 3)
    assert predicted[1].y[0] == pytest.approx(math.sqrt(theory.dropout_train_variance(
        1 / math.sqrt(2 * math.pi), 0.5 - 1 / (2 * math.pi), 0.5)))
    for layer in range(3):
        assert abs(h.snapshots[0].taps[(layer, "output")].zero_frac - 0.75) < 0.05


def test_gamma_beta_figure_is_the_recorded_parameters():
    h = train(Config(steps=100, optimizer="adam", lr=0.01, record_every=20, eval_every=50)).history
    fig = figs.gamma_beta_over_training(h)
    steps = h.snapshots.steps
    for layer, name in enumerate(h.layer_names):
        traces = [t for t in fig.data if t.legendgroup == name]
        gamma_hi, gamma_lo, gamma, beta_hi, beta_lo, beta, measured, predicted, negative = traces
        weights = np.array([s.norms[layer].weight for s in h.snapshots])
        biases = np.array([s.norms[layer].bias for s in h.snapshots])
        np.testing.assert_array_equal(gamma.x, steps)
        np.testing.assert_allclose(gamma.y, weights.mean(axis=1), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(gamma_hi.y) - gamma.y, weights.std(axis=1), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(beta.y, biases.mean(axis=1), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(measured.y, [s.taps[(layer, "post_activation")].zero_frac for s in h.snapshots])
        np.testing.assert_allclose(predicted.y, [figs.zero_probabilities(s.norms[layer]).mean() for s in h.snapshots])
        np.testing.assert_allclose(negative.y, (biases < 0).mean(axis=1))
    assert np.abs(biases).max() > 0.01  # Adam has moved beta away from 0 within 100 steps


def test_shifted_gaussian_theory_curve_and_points(at_init):
    fig = figs.shifted_relu_theory(at_init["BN→ReLU"], 0)
    mean, std, zero = fig.data[:3]
    for mu, m, s, p in zip(mean.x, mean.y, std.y, zero.y):
        ref = theory.relu_gaussian_moments(mu, 1.0)
        assert (m, s, p) == (ref.mean, ref.std, ref.p_zero)
    points = fig.data[3:]
    assert [t.x[0] for t in points] == [0.0, 0.0, 0.0]  # beta = 0 at initialization
    assert [t.y[0] for t in points] == [at_init["BN→ReLU"].snapshots[0].taps[(layer, "post_activation")].zero_frac
                                        for layer in range(3)]
    assert len(figs.shifted_relu_theory().data) == 3  # pure theory without a run


def test_a_diverged_layer_without_finite_gamma_is_left_out_not_an_error(at_init):
    histories = copy.deepcopy(at_init)
    h = histories["BN→ReLU"]
    nan = np.full(h.snapshots[0].norms[0].weight.shape, np.nan, dtype=np.float32)
    h.snapshots[0].norms[0] = dataclasses.replace(h.snapshots[0].norms[0], weight=nan)
    assert not figs.has_finite_affine(h.snapshots[0].norms[0]) and figs.has_finite_affine(h.snapshots[0].norms[1])
    check = figs.rectified_gaussian_check(h, 0)
    assert [t.xaxis for t in check.data if t.type == "scatter"] == ["x2", "x3"]
    theory_lines = [t for t in figs.relu_moments(histories, 0).data if t.legendgroup == "theory"]
    assert list(theory_lines[0].x) == ["layer 2", "layer 3"]
    assert not [t for t in figs.next_layer_input(histories, 0, 0).data if t.name.startswith("rectified")]
    assert len(figs.shifted_relu_theory(h, 0).data) == 3 + 2
    figs.gamma_beta_over_training(h)
