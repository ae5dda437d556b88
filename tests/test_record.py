"""Recorded numbers against numpy computed on the very same tensors."""
import numpy as np
import pytest
import torch

from bnviz.config import Config
from bnviz.models import build
from bnviz.record import PERCENTILES, Thinned, bin_edges, tap_stats
from bnviz.train import record_snapshot
from bnviz.record import new_history
from bnviz.models import TAPS


def _check_against_numpy(x: torch.Tensor, edges: np.ndarray):
    st = tap_stats(x, edges)
    v = x.numpy().reshape(-1)
    v = v[np.isfinite(v)]
    counts, _ = np.histogram(v, bins=edges)
    np.testing.assert_array_equal(st.counts, counts)
    assert st.below == np.sum(v < edges[0])
    assert st.above == np.sum(v > edges[-1])
    assert st.counts.sum() + st.below + st.above == v.size == st.n
    np.testing.assert_allclose(st.percentiles, np.percentile(v, PERCENTILES), rtol=1e-5, atol=1e-6)
    unit = x.numpy()[:, 0].reshape(-1)
    unit = unit[np.isfinite(unit)]
    np.testing.assert_allclose(st.unit_percentiles, np.percentile(unit, PERCENTILES), rtol=1e-5, atol=1e-6)
    assert st.mean == pytest.approx(v.astype(np.float64).mean(), rel=1e-6, abs=1e-9)
    assert st.std == pytest.approx(v.astype(np.float64).std(), rel=1e-5, abs=1e-7)
    assert st.zero_frac == pytest.approx(np.mean(v == 0))
    return st


@pytest.mark.parametrize("shape", [(64, 100), (32, 8, 4, 4), (7, 3)])
def test_tap_stats_match_numpy(shape):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g) * 3
    x = torch.where(x < -2, torch.zeros_like(x), x)  # exact zeros, as after a ReLU
    _check_against_numpy(x, np.linspace(-8, 8, 161, dtype=np.float32))
    _check_against_numpy(x, np.linspace(0, 1, 11, dtype=np.float32))


def test_values_on_bin_edges_follow_numpy_conventions():
    edges = np.linspace(-1, 1, 5, dtype=np.float32)
    x = torch.tensor(np.concatenate([edges, edges, [-3.0, 2.0]]).astype(np.float32)).reshape(2, -1)
    st = _check_against_numpy(x, edges)
    assert st.counts[-1] == 4  # the last bin is closed, as in numpy


def test_nonfinite_values_are_counted_not_summarised():
    x = torch.tensor([[1.0, float("nan")], [float("inf"), 2.0]])
    st = tap_stats(x, np.linspace(-8, 8, 161, dtype=np.float32))
    assert st.nonfinite == 2 and st.n == 2 and st.mean == pytest.approx(1.5)


def test_thinned_series_is_bounded_evenly_spaced_and_keeps_the_newest():
    series = Thinned(cap=50, stride=1)
    for step in range(10_000):
        if series.due(step):
            series.add(step, step)
    series.add(9_999, 9_999)
    assert len(series) <= 51
    assert series.steps[-1] == 9_999 and series.steps[0] == 0
    gaps = np.diff(series.steps[:-1])
    assert len(set(gaps.tolist())) == 1


@pytest.mark.parametrize("placement", ["before", "after"])
def test_snapshot_taps_describe_the_real_forward_pass(placement):
    cfg = Config(width=16, depth=2, placement=placement)
    model = build(cfg, (64,), 10)
    model.train()
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    model.start_taps()
    model(x)
    taps = model.collect_taps()
    history = new_history(cfg, model.layer_names, {t: bin_edges(t, cfg) for t in TAPS})
    snap = record_snapshot(model, 0, taps, history)
    for i, block_taps in enumerate(taps):
        torch.testing.assert_close(block_taps["post_activation"], torch.relu(block_taps["pre_activation"]))
        norm_out = block_taps["norm_output"].numpy()
        # at initialisation gamma = 1 and beta = 0: BN output is standardized per unit
        np.testing.assert_allclose(norm_out.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(norm_out.var(0), 1, atol=1e-2)
        norm_in = block_taps["norm_input"].numpy().astype(np.float64)
        ns = snap.norms[i]
        np.testing.assert_allclose(ns.batch_mean, norm_in.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ns.batch_var, norm_in.var(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(ns.running_mean, model.blocks[i].norm.running_mean.numpy())
        for tap in ("pre_activation", "norm_output", "post_activation", "output"):
            v = block_taps[tap].numpy()
            counts, _ = np.histogram(v, bins=history.edges[tap])
            np.testing.assert_array_equal(snap.taps[(i, tap)].counts, counts)
    expected_output = "post_activation" if placement == "before" else "norm_output"
    torch.testing.assert_close(taps[0]["output"], taps[0][expected_output])
