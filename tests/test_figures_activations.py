"""The activation figures draw exactly the numbers the History recorded (the History itself is
checked against numpy in test_record.py)."""
import numpy as np
import pytest

from bnviz.config import Config
from bnviz.figures import activations as figs
from bnviz.record import IOFFE_PERCENTILES, PERCENTILES, TENSORBOARD_PERCENTILES
from bnviz.train import train


@pytest.fixture(scope="module")
def histories():
    config = Config(steps=60, width=32, depth=2, record_every=10, eval_every=20)
    return {"with BN": train(config).history, "without BN": train(config.without_norm()).history}


def _traces(fig, kind):
    return [t for t in fig.data if t.type == kind]


def whole_histogram(trace, edges) -> np.ndarray:
    """A histogram's heights on every bin of ``edges``, read from its outline: each drawn bin is two
    points, at its left and right edge and both at its height (0 where no bin is drawn: the figure
    leaves out the empty bins at either end). The points must be on the edges, the drawn bins
    consecutive, and each point's hover must name its bin."""
    x, y = np.asarray(trace.x, dtype=float), np.asarray(trace.y, dtype=float)
    assert len(x) == len(y) and len(x) % 2 == 0
    left, right = x[0::2], x[1::2]
    index = np.searchsorted(edges, left - 1e-6 * (edges[1] - edges[0]))
    np.testing.assert_allclose(edges[index], left, rtol=1e-6, atol=1e-6)          # float32 on the wire
    np.testing.assert_allclose(edges[index + 1], right, rtol=1e-6, atol=1e-6)      # each pair spans one bin
    np.testing.assert_array_equal(np.diff(index), 1)                               # bins in order, none skipped
    np.testing.assert_array_equal(y[0::2], y[1::2])                                # flat top
    bins = np.asarray(trace.customdata, dtype=float)
    np.testing.assert_allclose(bins, np.repeat(np.stack([edges[index], edges[index + 1]], axis=1), 2, axis=0),
                               rtol=1e-6, atol=1e-6)
    full = np.zeros(len(edges) - 1)
    full[index] = y[0::2]
    return full


@pytest.mark.parametrize("tap", ["pre_activation", "norm_output", "post_activation"])
def test_layer_histograms_are_counts_over_n_on_the_recorded_edges(histories, tap):
    step = 30
    fig = figs.layer_histograms(histories, step, tap)
    drawn = list(fig.data)
    expected = [(label, layer) for label, h in histories.items() for layer in range(2)
                if (layer, tap) in h.snapshot_at(step).taps]
    assert len(drawn) == len(expected)
    for trace, (label, layer) in zip(drawn, expected):
        h = histories[label]
        st = h.snapshot_at(step).taps[(layer, tap)]
        edges = h.edges[tap]
        # a filled outline of the bars: one path per histogram, filled down to 0
        assert trace.type == "scatter" and trace.mode == "lines" and trace.fill == "tozeroy"
        assert trace.legendgroup == label
        assert trace.xaxis == ("x" if layer == 0 else f"x{layer + 1}")
        np.testing.assert_allclose(whole_histogram(trace, edges), st.counts / st.n, rtol=1e-6)
        filled = np.flatnonzero(st.counts)  # drawn: the first to the last non-empty bin
        assert len(trace.x) == 2 * (filled[-1] - filled[0] + 1)
        axis = fig.layout["xaxis" if layer == 0 else f"xaxis{layer + 1}"]
        assert list(axis.range) == pytest.approx([edges[0], edges[-1]])  # the axis shows every bin
    assert f"at step {step}" in fig.layout.title.text


def test_layer_histogram_outline_is_numpys_histogram_of_the_values():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 5000), [3.05] * 7])  # a gap of empty bins before 3.05
    edges = np.linspace(-8, 8, 161)
    counts, _ = np.histogram(values, bins=edges)
    x, y, bins = figs.histogram_outline(counts, len(values), edges)
    # every bin from the lowest to the highest value: its two corners at its edges, at count / n
    lo, hi = np.searchsorted(edges, values.min(), side="right") - 1, np.searchsorted(edges, values.max(), side="right")
    np.testing.assert_allclose(x, np.repeat(edges[lo:hi + 1], 2)[1:-1], rtol=1e-6)
    np.testing.assert_allclose(y, np.repeat(counts[lo:hi] / len(values), 2), rtol=1e-6)
    np.testing.assert_allclose(bins[::2, 0], edges[lo:hi], rtol=1e-6)
    np.testing.assert_allclose(bins[::2, 1], edges[lo + 1:hi + 1], rtol=1e-6)
    assert (y == 0).any()  # the empty bins inside the range are drawn at 0 (left out on a log axis)
    x, y, bins = figs.histogram_outline(np.zeros(160, dtype=np.int64), 0, edges)
    assert len(x) == len(y) == len(bins) == 0


def test_bn_output_missing_without_bn_is_said_not_drawn(histories):
    assert figs.runs_without(histories, "norm_output") == ["without BN"]
    assert figs.runs_without(histories, "pre_activation") == []
    for fig in (figs.layer_histograms(histories, 0, "norm_output"),
                figs.percentile_bands(histories, 0, "norm_output"),
                figs.moment_lines(histories, "norm_output", 0)):
        assert "without BN: no normalization output" in fig.layout.title.subtitle.text
        assert all(t.legendgroup != "without BN" for t in fig.data)
    heat = figs.histogram_heatmap(histories, 0, "norm_output")
    assert [t.name for t in heat.data] == ["with BN"]
    assert any("no normalization output" in a.text for a in heat.layout.annotations)
    assert figs.layer_histograms(histories, 0, "pre_activation").layout.title.subtitle.text is None


def test_a_run_that_stopped_early_shows_its_last_snapshot_and_says_so():
    config = Config(steps=60, width=16, depth=1, record_every=10, eval_every=20)
    stopped = train(config, lambda done, total, h: done < 20).history
    full = train(config).history
    assert stopped.snapshots.steps[-1] < 59
    fig = figs.layer_histograms({"full": full, "stopped": stopped}, 59, "pre_activation")
    names = [t.name for t in fig.data]
    assert names == ["full", f"stopped (step {stopped.snapshots.steps[-1]}, its last recorded)"]
    last = stopped.snapshots[-1].taps[(0, "pre_activation")]
    np.testing.assert_allclose(whole_histogram(fig.data[1], stopped.edges["pre_activation"]), last.counts / last.n,
                               rtol=1e-6)


def test_values_beyond_the_bins_are_reported_per_panel():
    h = train(Config(norm="none", init_scale=10.0, steps=1, width=64, depth=2)).history
    st = h.snapshots[0].taps[(1, "pre_activation")]
    beyond = (st.below + st.above) / st.n
    assert beyond > 0.01  # init scale 10 spreads the second layer's pre-activations beyond [-8, 8]
    fig = figs.layer_histograms({"no BN": h}, 0, "pre_activation")
    texts = [a.text for a in fig.layout.annotations if a.xref == "x2 domain"]
    assert texts == [f"no BN: {beyond:.1%} outside [-8, 8]"]


@pytest.mark.parametrize("bands", [IOFFE_PERCENTILES, TENSORBOARD_PERCENTILES])
@pytest.mark.parametrize("unit", [False, True])
def test_percentile_bands_are_the_recorded_percentiles(histories, bands, unit):
    layer, tap = 1, "post_activation"
    fig = figs.percentile_bands(histories, layer, tap, unit=unit, bands=bands)
    assert len(fig.data) == len(histories) * len(bands)
    for label, h in histories.items():
        steps, stats = h.tap_series(layer, tap)
        drawn = {t.meta: t for t in fig.data if t.legendgroup == label}
        assert sorted(drawn) == sorted(bands)
        for q, trace in drawn.items():
            recorded = [(s.unit_percentiles if unit else s.percentiles)[PERCENTILES.index(q)] for s in stats]
            np.testing.assert_array_equal(trace.x, steps)
            np.testing.assert_allclose(trace.y, recorded)
        median = drawn[50]
        assert median.fill is None and median.line.width == 2
        # each lower percentile of a pair fills up to its upper one, drawn just before it
        order = [t.meta for t in fig.data if t.legendgroup == label]
        for lo, hi in zip(sorted(bands)[:len(bands) // 2], sorted(bands)[::-1]):
            assert drawn[lo].fill == "tonexty" and order[order.index(lo) - 1] == hi


def test_percentile_bands_reject_unrecorded_or_even_sets(histories):
    with pytest.raises(ValueError):
        figs.percentile_bands(histories, 0, "pre_activation", bands=(10, 50, 90))
    with pytest.raises(ValueError):
        figs.percentile_bands(histories, 0, "pre_activation", bands=(15, 85))


@pytest.mark.parametrize("log_color", [True, False])
def test_heatmap_columns_are_the_histograms_of_each_recorded_step(histories, log_color):
    layer, tap = 1, "pre_activation"
    fig = figs.histogram_heatmap(histories, layer, tap, log_color=log_color)
    assert [t.name for t in fig.data] == list(histories)
    for trace, (label, h) in zip(fig.data, histories.items()):
        steps, stats = h.tap_series(layer, tap)
        shares = np.array([s.counts / s.n for s in stats]).T
        np.testing.assert_array_equal(trace.x, steps)
        # the hover's "% of values": customdata when z is the log of the share, z itself otherwise
        assert ("%{customdata:.2%} of values" if log_color else "%{z:.2%} of values") in trace.hovertemplate
        hovered = np.asarray(trace.customdata if log_color else trace.z, dtype=float)
        rtol = 1e-6  # sent as float32: ~7 significant digits, the hover shows 4
        np.testing.assert_allclose(hovered, shares, rtol=rtol)
        expected = np.log10(np.maximum(shares, figs.HEATMAP_FLOOR)) if log_color else shares
        np.testing.assert_allclose(np.asarray(trace.z, dtype=float), expected, rtol=rtol)
        assert trace.coloraxis == "coloraxis"  # one colour scale for both runs
        np.testing.assert_allclose(hovered.sum(axis=0), [(s.n - s.below - s.above) / s.n for s in stats], rtol=rtol)
    # one column per recorded step, equally wide (a category axis), labelled at round steps
    assert fig.layout.xaxis.type == "category"
    assert all(int(v) % 10 == 0 for v in fig.layout.xaxis.tickvals) and fig.layout.xaxis.tickvals[0] == 0


def test_moment_lines_are_the_recorded_moments(histories):
    fig = figs.moment_lines(histories, "post_activation", 59)
    for label, h in histories.items():
        stats = [h.snapshot_at(59).taps[(layer, "post_activation")] for layer in range(2)]
        mean, std, zeros = [t for t in fig.data if t.legendgroup == label]
        np.testing.assert_allclose(mean.y, [s.mean for s in stats])
        np.testing.assert_allclose(std.y, [s.std for s in stats])
        np.testing.assert_allclose(zeros.y, [s.zero_frac for s in stats])


@pytest.mark.parametrize("depth", [6, 8])
def test_notes_of_values_beyond_the_bins_fit_narrow_panels(depth):
    # Six or more panels side by side leave ~200 px each: a one-line note ran into its neighbours.
    h = train(Config(norm="none", init_scale=10.0, steps=1, width=16, depth=depth)).history
    fig = figs.layer_histograms({"without normalization": h}, 0, "pre_activation")
    notes = [a.text for a in fig.layout.annotations if "outside" in (a.text or "")]
    assert notes
    for text in notes:
        label, share = text.split("<br>")
        assert label == "without normalization:" and len(share) <= len("100.0% outside [-8, 8]")
        assert ("[-8, 8]" in share) == (depth <= 6)


def _played_heights(x, y, edges) -> np.ndarray:
    """The heights of a played histogram: a step line (shape "hv") with a point at every edge, the
    last repeating the last bin's height."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    np.testing.assert_allclose(x, edges, rtol=1e-6, atol=1e-6)
    assert y[-1] == y[-2]
    return y[:-1]


@pytest.mark.parametrize("tap", ["pre_activation", "norm_output", "post_activation"])
def test_played_histograms_show_each_frames_recorded_counts_over_n(histories, tap):
    fig = figs.animated_layer_histograms(histories, tap)
    steps = list(next(iter(histories.values())).snapshots.steps)
    assert [f.name for f in fig.frames] == [str(s) for s in steps]
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(s) for s in steps]
    keys = [(label, layer) for label, h in histories.items() for layer in range(2) if (layer, tap) in h.snapshots[-1].taps]
    assert len(fig.data) == len(keys)
    for trace in fig.data:
        assert trace.line.shape == "hv" and trace.fill == "tozeroy"
    top = 0.0
    for frame, step in zip(fig.frames, steps):
        # a frame updates every trace: its heights, its name and its hover
        assert sorted(frame.traces) == list(range(len(keys)))
        for index, update in zip(frame.traces, frame.data):
            label, layer = keys[index]
            st = histories[label].snapshot_at(step).taps[(layer, tap)]
            heights = _played_heights(fig.data[index].x, update.y, histories[label].edges[tap])
            np.testing.assert_allclose(heights, st.counts / st.n, rtol=1e-6)
            top = max(top, heights.max())
            assert update.name == label
            assert f"mean {st.mean:.3f}" in update.hovertemplate
        assert frame.layout.title.text.endswith(f"at step {step}")
    # the figure shows the last frame, on a y axis that fits every frame
    for trace, update in zip(fig.data, fig.frames[-1].data):
        np.testing.assert_array_equal(trace.y, update.y)
    assert fig.layout.yaxis.range[1] == pytest.approx(top * 1.05, rel=1e-6)
    assert fig.layout.yaxis.autorange is False


def test_played_histograms_of_a_run_that_stopped_early_keep_its_last_snapshot():
    config = Config(steps=60, width=16, depth=2, record_every=10, eval_every=20)
    full = train(config).history
    stopped = train(config, lambda done, total, h: done < 20).history
    last_step = stopped.snapshots.steps[-1]
    assert last_step < full.snapshots.steps[-1]
    fig = figs.animated_layer_histograms({"full": full, "stopped": stopped}, "pre_activation")
    assert [f.name for f in fig.frames] == [str(s) for s in full.snapshots.steps]
    update = fig.frames[-1].data[2]                  # the stopped run's first layer, in the last frame
    assert update.name == f"stopped (step {last_step}, its last recorded)"
    last = stopped.snapshot_at(last_step).taps[(0, "pre_activation")]
    np.testing.assert_allclose(update.y[:-1], last.counts / last.n, rtol=1e-6)
