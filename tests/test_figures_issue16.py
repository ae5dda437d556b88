"""The issue-16 figures draw the numbers they are given: traces against the inputs and closed forms."""
import math

import numpy as np

from bnviz.experiments.depth_gradients import GROWTH, KINDS, GradientRun
from bnviz.experiments.residual import BlockVariances
from bnviz.experiments.transformer import one_vector
from bnviz.figures import depth, residual, shared_statistics, transformer
from bnviz.experiments.shared_statistics import shared_statistics as shared_of
from bnviz.train import Curves

CURVES = Curves(loss=np.ones(3), batch_acc=np.ones(3), eval_steps=np.array([0, 3]), test_acc=np.array([0.1, 0.9]),
                test_loss=np.ones(2), diverged_at=None)


def _trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_residual_init_draws_the_measured_values_and_the_closed_forms():
    measured = {"pre-activation BN": BlockVariances(0, np.array([2.0, 3.1, 3.9]), np.array([1.0, 1.1, 0.9])),
                "no normalization": BlockVariances(0, np.array([2.0, 4.2, 7.5]), np.array([2.1, 3.5, 8.0])),
                "SkipInit (no norm)": BlockVariances(0, np.array([2.0, 2.0, 2.0]), np.zeros(3))}
    fig = residual.variance_at_init(measured)
    np.testing.assert_allclose([t for t in fig.data if t.name == "pre-activation BN"][0].y, [2.0, 3.1, 3.9])
    np.testing.assert_allclose(_trace(fig, "pre-activation BN: Var(x_0) + (l - 1)").y, [2.0, 3.0, 4.0])
    np.testing.assert_allclose(_trace(fig, "no normalization: Var(x_0) · 2^(l - 1)").y, [2.0, 4.0, 8.0])
    ratio = [t for t in fig.data if t.name == "SkipInit (no norm)"][1].y
    assert list(ratio) == [None, None, None]                        # 0 has no place on a log axis
    assert "SkipInit (no norm)" in fig.layout.annotations[1].text   # said in the panel's title instead


def test_depth_draws_yang_growth_from_the_last_layer():
    norms = np.array([[8.0, 4.0, 2.0, 1.0]])
    runs = {KINDS["bn"]: GradientRun(KINDS["bn"], norms, CURVES)}
    fig = depth.gradient_norms(runs, 0)
    theory = [t for t in fig.data if t.name.startswith(f"{GROWTH:.3f}")][0]
    np.testing.assert_allclose(theory.y, [GROWTH ** 3, GROWTH ** 2, GROWTH, 1.0])
    assert GROWTH == math.sqrt(math.pi / (math.pi - 1))


def test_shared_tiles_put_each_value_in_its_tile():
    x = np.arange(2 * 3 * 2 * 4, dtype=float).reshape(2, 3, 2, 4)
    t = shared_statistics.tiles(x)
    assert t.shape == (2 * 3 - 1, 3 * 5 - 1)
    for n in range(2):
        for c in range(3):
            np.testing.assert_array_equal(t[n * 3:n * 3 + 2, c * 5:c * 5 + 4], x[n, c])
    assert np.isnan(t[2]).all() and np.isnan(t[:, 4]).all()
    found = [shared_of(x, (1, 2, 1, 3), m, 3) for m in ("BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm")]
    fig = shared_statistics.shared_sets(x, found, (1, 2, 1, 3))
    colored = [tr for tr in fig.data if tr.type == "heatmap" and tr.showscale is not None and tr.name == "InstanceNorm"][0]
    assert np.count_nonzero(np.isfinite(np.asarray(colored.z, dtype=float))) == 2 * 4


def test_one_vector_bars_are_the_norms():
    result = one_vector(1.0, 2.0)
    fig = transformer.one_vector(result, 1.0, 2.0)
    bars = [t for t in fig.data if t.type == "bar"]
    np.testing.assert_allclose(bars[2].y, result.ln)
    np.testing.assert_allclose(bars[5].y, result.rms_moved)
