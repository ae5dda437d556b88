"""Recorded numbers against numpy computed on the very same tensors."""
import dataclasses

import numpy as np
import pytest
import torch

from bnviz.config import Config
from bnviz.models import build
from bnviz.record import (PERCENTILES, NormStats, Scratch, TapStats, Thinned, bin_edges, sorted_rows,
                          summarize_sorted, tap_stats, tap_stats_many)
from bnviz.recorder import Recorder
from taps import block_taps as independent_taps
from bnviz.record import new_history
from bnviz.record import TAPS


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


def test_infinities_of_both_signs_and_nan_are_left_out_of_every_statistic():
    x = torch.tensor([[0.5, -np.inf, np.nan], [-0.25, np.inf, 0.0], [9.0, -np.inf, -9.0]], dtype=torch.float32)
    st = tap_stats(x, np.linspace(-8, 8, 161, dtype=np.float32))
    finite = x[torch.isfinite(x)]
    assert st.nonfinite == 4 and st.n == 5
    assert st.below == 1 and st.above == 1 and st.counts.sum() == 3   # -9 and 9 lie outside [-8, 8]
    np.testing.assert_allclose(st.percentiles, np.percentile(finite.numpy(), PERCENTILES), rtol=1e-6)
    np.testing.assert_allclose(st.unit_percentiles, np.percentile([0.5, -0.25, 9.0], PERCENTILES), rtol=1e-6)
    assert st.mean == pytest.approx(finite.double().mean().item())
    assert st.zero_frac == pytest.approx(1 / 5)


def test_all_nonfinite_tensor_gives_empty_statistics():
    st = tap_stats(torch.full((4, 3), float("nan")), np.linspace(-1, 1, 5, dtype=np.float32))
    assert st.n == 0 and st.nonfinite == 12 and st.counts.sum() == 0 and st.below == st.above == 0
    assert np.isnan(st.percentiles).all() and np.isnan(st.mean) and np.isnan(st.zero_frac)


@pytest.mark.parametrize("shape", [(64, 100), (16, 8, 3, 3), (9, 2)])
def test_summarising_together_equals_one_at_a_time(shape):
    g = torch.Generator().manual_seed(2)
    tensors = [torch.randn(shape, generator=g) * s for s in (0.5, 1.0, 4.0)]
    tensors.append(torch.relu(tensors[0]))
    bad = tensors[1].clone().reshape(-1)
    bad[::7] = float("nan")
    bad[1::11] = -float("inf")
    tensors.append(bad.reshape(shape))
    edges = np.linspace(-2, 2, 41, dtype=np.float32)
    together = tap_stats_many(tensors, edges)
    for x, got in zip(tensors, together):
        want = _check_against_numpy(x, edges) if torch.isfinite(x).all() else tap_stats(x, edges)
        np.testing.assert_array_equal(got.counts, want.counts)
        np.testing.assert_array_equal(got.percentiles, want.percentiles)
        np.testing.assert_array_equal(got.unit_percentiles, want.unit_percentiles)
        assert (got.below, got.above, got.nonfinite, got.n) == (want.below, want.above, want.nonfinite, want.n)
        assert got.mean == want.mean and got.std == want.std and got.zero_frac == want.zero_frac


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
    history = new_history(cfg, model.layer_names, {t: bin_edges(t, cfg) for t in TAPS})
    recorder = Recorder(model, model.recorded_layers(), history.edges)
    recorder.arm()
    taps = independent_taps(model, x)     # the same forward pass, seen by independent hooks
    snap = recorder.collect(0)
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


def test_summarising_together_with_each_tensor_on_its_own_edges():
    # A snapshot summarises taps of one shape with two kinds of edges (wide, and the
    # activation's range) in one call; values are put on some of the edges on purpose.
    g = torch.Generator().manual_seed(3)
    wide, narrow = np.linspace(-8, 8, 161, dtype=np.float32), np.linspace(0, 5, 101, dtype=np.float32)
    tensors, edges = [], []
    for scale, e in ((1.0, wide), (2.0, narrow), (0.5, wide), (3.0, narrow), (1.0, narrow)):
        x = torch.randn(64, 100, generator=g) * scale
        x.view(-1)[:50] = torch.from_numpy(e[torch.randint(len(e), (50,), generator=g).numpy()])
        tensors.append(torch.relu(x) if e is narrow else x)
        edges.append(e)
    for x, e, got in zip(tensors, edges, tap_stats_many(tensors, edges)):
        want = _check_against_numpy(x, e)
        np.testing.assert_array_equal(got.counts, want.counts)
        assert (got.below, got.above, got.zero_frac) == (want.below, want.above, want.zero_frac)


def _relu_cases():
    """Tensors of one shape whose ReLU is summarised from their own sorted values: values on the
    edges, exact zeros of both signs, non-finite values, a tensor with nothing above 0, one all
    -inf (its ReLU is all 0) and one all NaN (nothing to summarise)."""
    g = torch.Generator().manual_seed(4)
    xs = []
    for shape in ((64, 100), (16, 8, 3, 3), (7, 3)):
        x = torch.randn(shape, generator=g) * 2
        flat = x.view(-1)
        flat[::13] = 0.0
        flat[5::17] = -0.0
        flat[7::19] = torch.tensor([0.05, 0.5, -1.0, 0.1]).repeat(flat[7::19].numel())[:flat[7::19].numel()]
        bad = x.clone().view(-1)
        bad[::11] = float("nan")
        bad[3::23] = float("inf")
        bad[1::7] = -float("inf")
        xs.append([x, bad.view(shape), -x.abs(), torch.full(shape, -float("inf")), torch.full(shape, float("nan"))])
    return xs


@pytest.mark.parametrize("case", range(3))
def test_a_relus_statistics_from_its_inputs_sorted_values_equal_those_of_the_relu_itself(case):
    tensors = _relu_cases()[case]
    post, below_zero = np.linspace(0, 5, 101, dtype=np.float32), np.linspace(-1, 3, 41, dtype=np.float32)
    wide, above_zero = np.linspace(-8, 8, 161, dtype=np.float32), np.linspace(0.05, 2, 40, dtype=np.float32)
    outputs = [(i, e, relu) for i in range(len(tensors)) for e in (post, below_zero, wide, above_zero)
               for relu in (False, True)]
    s, unit = sorted_rows(tensors)
    got = summarize_sorted(s, unit, [e for _, e, _ in outputs], [i for i, _, _ in outputs], [r for _, _, r in outputs])
    for (i, e, relu), stats in zip(outputs, got):
        x = torch.relu(tensors[i]) if relu else tensors[i]
        want = tap_stats(x, e)   # from the values themselves, sorted on their own
        np.testing.assert_array_equal(stats.counts, want.counts)
        np.testing.assert_array_equal(stats.percentiles, want.percentiles)
        np.testing.assert_array_equal(stats.unit_percentiles, want.unit_percentiles)
        assert (stats.below, stats.above, stats.nonfinite, stats.n) == (want.below, want.above, want.nonfinite, want.n)
        assert stats.zero_frac == pytest.approx(want.zero_frac, rel=0, abs=0, nan_ok=True)
        assert stats.mean == pytest.approx(want.mean, rel=1e-12, abs=1e-300, nan_ok=True)
        assert stats.std == pytest.approx(want.std, rel=1e-9, abs=1e-12, nan_ok=True)
        if relu and torch.isfinite(tensors[i]).all():
            _check_against_numpy(x, e)   # and the ReLU's own against numpy


def test_recorded_snapshot_parts_take_no_more_memory_than_constructed_ones():
    # Assembled without __init__ (object.__new__, then __dict__.update), a TapStats' attribute dict
    # has keys of its own instead of sharing its class's (PEP 412): a long run's History held ~20 %
    # more memory. The recorder must hand out parts as compact as constructed ones.
    import sys
    from bnviz.config import Config
    from bnviz.train import train
    snap = train(Config(steps=3, width=8, depth=1, record_every=1, eval_every=3)).history.snapshots[-1]
    for part in (*snap.taps.values(), *snap.norms.values()):
        fresh = type(part)(**vars(part))
        assert sys.getsizeof(vars(part)) == sys.getsizeof(vars(fresh)), type(part).__name__


def test_scratch_space_is_kept_between_summaries_and_handed_on(monkeypatch):
    monkeypatch.setattr(Scratch, "_spare", [])
    a = Scratch()
    x = a.take(1000)
    assert x.dtype == np.float64 and x.shape == (1000,)
    assert np.shares_memory(a.take(500, np.float32), x)           # the same memory again
    assert not np.shares_memory(a.take(Scratch.LIMIT), x)         # more than is kept: an array of its own
    a.release()
    assert not len(a.space) and len(Scratch._spare) == 1
    b = Scratch()
    assert np.shares_memory(b.take(200), x)                       # handed on to the next one
    for _ in range(Scratch.SPARE + 2):
        c = Scratch()
        c.take(10)
        c.release()
    assert len(Scratch._spare) <= Scratch.SPARE                   # a few kept at most


def test_sorting_without_a_scratch_leaves_the_recorders_spare_space_alone(monkeypatch):
    import torch
    monkeypatch.setattr(Scratch, "_spare", [])
    kept = Scratch()
    kept.take(4096)
    kept.release()
    spare = list(Scratch._spare)
    t = torch.randn(3, 8, 5)
    s, unit = sorted_rows([t, t * 2])
    summarize_sorted(s, unit, [np.linspace(-3, 3, 13)] * 2)
    assert len(Scratch._spare) == 1 and Scratch._spare[0] is spare[0]
    np.testing.assert_array_equal(s[0], np.sort(t.numpy().ravel()))
