"""Dropout's variance shift: closed forms vs Monte-Carlo on plain tensors, and the measurement on a
trained network vs numpy and theory."""
import numpy as np
import pytest
import torch

from bnviz import theory
from bnviz.experiments import variance_shift as vs
from bnviz.config import Config
from bnviz.models import SeededDropout
from bnviz.train import train
from test_adapt import numpy_forward  # the hand-written numpy MLP oracle

BASE = Config(steps=150, width=32, depth=3, batch_size=32, dropout=0.5, record_every=1000, eval_every=1000)


def _dropout(x, keep, seed):
    drop = SeededDropout(1.0 - keep, torch.Generator().manual_seed(seed))
    drop.train()
    return drop(x)


@pytest.mark.parametrize("c, v, keep", [(0.0, 1.0, 0.5), (1.5, 0.4, 0.7), (-0.8, 2.0, 0.9)])
def test_closed_form_ratio_matches_monte_carlo(c, v, keep):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(400_000, generator=gen, dtype=torch.float64) * v ** 0.5 + c
    ratio = float(_dropout(x, keep, 2).var() / x.var())
    assert ratio == pytest.approx(theory.dropout_variance_ratio(c, v, keep), rel=0.02)


def test_linear_after_dropout_matches_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(200_000, 6, generator=gen, dtype=torch.float64) + torch.linspace(-1, 1, 6,
                                                                                                dtype=torch.float64))
    w = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    keep = 0.6
    z_eval = a @ w.T
    z_train = _dropout(a, keep, 3) @ w.T
    measured = (z_train.var(0) / z_eval.var(0)).numpy()
    predicted = vs.linear_after_dropout_ratio(w.numpy(), (a ** 2).mean(0).numpy(), z_eval.var(0).numpy(), keep)
    np.testing.assert_allclose(measured, predicted, rtol=0.03)


def test_linear_formula_with_identity_is_the_direct_one():
    c, v = np.array([0.3, -1.0, 2.0]), np.array([0.5, 1.0, 0.1])
    got = vs.linear_after_dropout_ratio(np.eye(3), c ** 2 + v, v, 0.7)
    np.testing.assert_allclose(got, theory.dropout_variance_ratio(c, v, 0.7), rtol=1e-12)
    with pytest.raises(ValueError):
        vs.linear_after_dropout_ratio(np.eye(3), c ** 2 + v, v, 0.0)


def test_dropout_before_bn_first_layer_matches_numpy_and_theory():
    run = train(BASE.replace(dropout_position="before_norm"))
    x = run.dataset.x_train
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    shifts = vs.measure_variance_shift(run.model, x, seed=4)
    assert all(torch.equal(before[k], v) for k, v in run.model.state_dict().items())
    first = shifts[0]
    z = x.double().numpy() @ run.model.blocks[0].weight.weight.detach().double().numpy().T  # eval-mode BN input
    np.testing.assert_allclose(first.eval_var, z.var(0), rtol=1e-6)
    expected_train = theory.dropout_train_variance(z.mean(0), z.var(0), 0.5)
    np.testing.assert_allclose(first.train_var, expected_train, rtol=0.25)
    assert first.mean_ratio == pytest.approx(float(np.mean(expected_train / z.var(0))), rel=0.03)
    np.testing.assert_allclose(first.theory_ratio, expected_train / z.var(0), rtol=1e-6)
    assert "right before BN" in first.theory
    assert shifts[2].mean_ratio > shifts[2].mean_theory  # the shift compounds through the layers


def test_dropout_after_activation_feeds_the_next_linear_layer():
    run = train(BASE.replace(dropout_position="after_activation"))
    shifts = vs.measure_variance_shift(run.model, run.dataset.x_train, seed=0)
    np.testing.assert_allclose(shifts[0].measured_ratio, 1.0, rtol=1e-4)   # no dropout before the first BN
    assert shifts[1].mean_theory is not None and "Linear" in shifts[1].theory
    assert shifts[1].mean_ratio == pytest.approx(shifts[1].mean_theory, rel=0.06)


def test_dropout_only_before_the_classifier_leaves_bn_alone():
    run = train(BASE.replace(dropout_position="before_output"))
    shifts = vs.measure_variance_shift(run.model, run.dataset.x_train)
    np.testing.assert_allclose(shifts[0].measured_ratio, 1.0, rtol=1e-6)
    for s in shifts:
        assert s.mean_theory == 1.0
        assert s.mean_ratio == pytest.approx(1.0, abs=0.1)   # only running vs batch statistics upstream


def test_recomputed_statistics_match_a_numpy_population_pass():
    run = train(BASE.replace(dropout_position="before_norm", depth=2))
    d = run.dataset
    fix = vs.recomputed_statistics_accuracy(run.model, d.x_train, d.x_test, d.y_test)
    stats = []
    numpy_forward(run.model, d.x_train, record=stats)   # dropout off: numpy has none
    logits = numpy_forward(run.model, d.x_test, stats=stats)
    assert fix.acc_recomputed == pytest.approx(float(np.mean(logits.argmax(1) == d.y_test.numpy())), abs=1e-6)
    run.model.eval()
    with torch.no_grad():
        assert fix.acc_running == pytest.approx((run.model(d.x_test).argmax(1) == d.y_test).float().mean().item())
    assert fix.loss_recomputed < fix.loss_running   # the shift inflates the eval-mode loss


def test_no_dropout_means_no_shift():
    """Without dropout only BN's own train/eval difference (batch vs running statistics upstream)
    is left: none at the first layer, little after training has settled the running statistics."""
    run = train(BASE.replace(dropout=0.0, steps=300))
    shifts = vs.measure_variance_shift(run.model, run.dataset.x_train)
    np.testing.assert_allclose(shifts[0].measured_ratio, 1.0, rtol=1e-6)
    for s in shifts:
        assert s.mean_theory == 1.0
        assert s.mean_ratio == pytest.approx(1.0, abs=0.1)


def test_a_unit_that_never_varies_has_no_ratio_and_the_others_keep_theirs():
    run = train(BASE.replace(dropout_position="before_norm", steps=50))
    model = run.model
    with torch.no_grad():
        model.blocks[0].weight.weight[3] = 0           # unit 3 of the first BN's input is always 0
        if model.blocks[0].weight.bias is not None:
            model.blocks[0].weight.bias[3] = 0
    first = vs.measure_variance_shift(model, run.dataset.x_train, seed=4)[0]
    assert first.eval_var[3] == 0 and np.isnan(first.theory_ratio[3])
    others = np.delete(np.arange(len(first.eval_var)), 3)
    z = run.dataset.x_train.double().numpy() @ model.blocks[0].weight.weight.detach().double().numpy().T
    expected = theory.dropout_train_variance(z.mean(0), z.var(0), 0.5)[others] / z.var(0)[others]
    np.testing.assert_allclose(first.theory_ratio[others], expected, rtol=1e-6)


def test_the_unit_scatter_explains_a_layer_with_no_ratio_to_draw_and_draws_the_others():
    """Found by the page fuzzer (seed 659, Linear-ReLU-dropout-BN): every unit dead in eval mode made
    the figure raise numpy's "zero-size array to reduction operation minimum". Units that vary, with
    finite variances, are drawn; none left: the figure says why instead of failing."""
    from bnviz.experiments.variance_shift import LayerShift
    from bnviz.figures.dropout import unit_scatter

    train = np.array([1.0, 2.0, 0.5, np.nan])
    evals = np.array([0.5, 0.0, 0.25, 1.0])
    theory = np.array([2.1, 1.0, 1.9, 2.0])
    fig = unit_scatter(LayerShift(layer=0, name="BN 1", train_var=train, eval_var=evals, theory_ratio=theory,
                                  theory="1/p"))
    points = next(t for t in fig.data if t.mode == "markers")
    np.testing.assert_allclose(points.y, [2.0, 2.0])                    # units 0 and 2: 1/0.5, 0.5/0.25
    np.testing.assert_allclose(points.x, [2.1, 1.9])
    for dead in (np.zeros(4), np.full(4, np.nan)):
        fig = unit_scatter(LayerShift(layer=0, name="BN 1", train_var=train, eval_var=dead, theory_ratio=theory,
                                      theory="1/p"))
        assert not fig.data and "no ratio to draw" in fig.layout.annotations[0].text
        fig = unit_scatter(LayerShift(layer=0, name="BN 1", train_var=train, eval_var=dead, theory_ratio=None,
                                      theory="no closed form"))
        assert not fig.data and "no ratio to draw" in fig.layout.annotations[0].text
