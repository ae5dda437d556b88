"""The Activation histograms page under Streamlit's AppTest: it trains both runs, draws the
recorded numbers, redraws on display controls without retraining, and explains bad input."""
import base64

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

from bnviz import executor, ui
from bnviz.config import Config
from bnviz.views import histograms, registry, render
from conftest import ROOT

PAGE = str(ROOT / "pages" / "1_Activation_histograms.py")
QUICK = {"steps": "100"}


def _app(**query: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=600)
    for key, value in {**QUICK, **query}.items():
        at.query_params[key] = value
    return at.run()


def _figures(at: AppTest) -> list[go.Figure]:
    return [pio.from_json(chart.proto.spec) for chart in at.get("plotly_chart")]


def values(data) -> np.ndarray:
    """A trace's array as the browser gets it: plotly sends numpy arrays base64-encoded."""
    if isinstance(data, dict) and "bdata" in data:
        flat = np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
        return flat.reshape([int(n) for n in str(data["shape"]).split(",")]) if "shape" in data else flat
    return np.asarray(data)


def _title(fig: go.Figure) -> str:
    return fig.layout.title.text


@pytest.fixture
def trainings(monkeypatch):
    """Counts the networks the page trains (cache hits do not count): the runs it hands to the
    executor, which trains them in worker processes."""
    calls = []
    real = executor.Executor.submit

    def counting(self, fn, *args, **kwargs):
        if fn is executor.train_packed:
            calls.append(args[0])
        return real(self, fn, *args, **kwargs)

    monkeypatch.setattr(executor.Executor, "submit", counting)
    return calls


def test_page_draws_the_recorded_histograms_of_both_runs():
    at = _app()
    assert not at.exception and not at.error
    figs = _figures(at)
    assert [_title(f) for f in figs] == [
        "Pre-activation per layer at step 99",
        "Pre-activation, all units of layer 3: 15/50/85th percentiles",
        "Pre-activation of layer 3 over training"]
    outlines = [t for t in figs[0].data if t.type == "scatter" and t.fill == "tozeroy"]
    assert len(outlines) == 6  # 2 runs x 3 layers, each histogram one filled outline
    run = ui.run_store().get(Config(steps=100))
    assert run is not None
    st = run.history.snapshot_at(99).taps[(0, "pre_activation")]
    with_bn_layer1 = next(t for t in outlines if t.legendgroup == "with BN" and t.xaxis == "x")
    x, y = values(with_bn_layer1.x), values(with_bn_layer1.y)  # two corners per bin: left and right edge
    edges = run.history.edges["pre_activation"]
    shown = dict(zip(np.round(x[0::2], 4), y[0::2]))  # bin's left edge -> height
    np.testing.assert_allclose(np.round(x[1::2], 4), np.round(x[0::2] + (edges[1] - edges[0]), 4))
    np.testing.assert_array_equal(y[0::2], y[1::2])
    np.testing.assert_allclose([shown.get(e, 0.0) for e in np.round(edges[:-1], 4)], st.counts / st.n,
                               rtol=1e-6)  # undrawn bins are empty; float32 on the wire
    assert at.select_slider(key="histograms.view.step").value == 99
    assert at.selectbox(key="histograms.view.layer").value == 2
    assert "what to look for" in at.caption[0].value.lower()


def test_display_controls_redraw_without_retraining(trainings):
    at = _app()
    trainings.clear()
    at.radio(key="histograms.view.tap").set_value("norm_output").run()
    assert "without BN has no normalization output" in at.info[0].value
    at.select_slider(key="histograms.view.step").set_value(0).run()
    at.toggle(key="histograms.view.log_y").set_value(True).run()
    at.radio(key="histograms.view.bands").set_value("tensorboard").run()
    at.selectbox(key="histograms.view.layer").set_value(0).run()
    assert not at.exception and not at.error
    assert trainings == []
    figs = _figures(at)
    assert _title(figs[0]) == "Normalization output per layer at step 0"
    assert figs[0].layout.yaxis.type == "log"
    assert "without BN: no normalization output" in figs[0].layout.title.subtitle.text
    assert _title(figs[1]) == "Normalization output, all units of layer 1: 0/7/16/31/50/69/84/93/100th percentiles"
    assert at.query_params["tap"] == "norm_output" and at.query_params["step"] == "0"


def test_a_link_restores_the_display_settings():
    at = _app(tap="post_activation", step="40", layer="0", bands="tensorboard", unit="1")
    assert not at.exception and not at.error
    assert at.radio(key="histograms.view.tap").value == "post_activation"
    assert at.select_slider(key="histograms.view.step").value == 40
    figs = _figures(at)
    assert _title(figs[0]) == "Post-activation per layer at step 40"
    assert _title(figs[1]) == "Post-activation, unit 1 of layer 1: 0/7/16/31/50/69/84/93/100th percentiles"


def test_bad_links_and_settings_explain_themselves():
    at = _app(step="abc", tap="bogus", layer="99")
    assert not at.exception and not at.error
    assert "step: 'abc' is not a whole number" in at.warning[0].value
    assert at.radio(key="histograms.view.tap").value == "pre_activation"
    assert at.selectbox(key="histograms.view.layer").value == 2  # the nearest layer there is
    at.selectbox(key="batch_size").set_value(1).run()
    assert not at.exception
    assert "cannot train" in at.error[0].value and "batch of one" in at.error[0].value


def test_view_is_registered_and_renders_for_export():
    assert registry()["histograms"] is histograms.VIEW
    figs = render(histograms.VIEW, Config(steps=30, width=16, depth=2, record_every=10))
    assert list(figs) == ["layer histograms", "percentile bands", "histograms over training"]
    assert _title(figs["layer histograms"]) == "Pre-activation per layer at step 29"


# ----- display changes rerun only the parts drawn with them ------------------------------------------------
BUILDERS = ("layer_histograms", "percentile_bands", "histogram_heatmap")


@pytest.fixture
def rebuilt(monkeypatch):
    """Which of the page's figures were built, and how often the page script ran (``page.config``
    runs once per run of the script; a part rerun does not call it)."""
    calls: list[str] = []
    for name in BUILDERS:
        real = getattr(histograms, name)
        monkeypatch.setattr(histograms, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    real_config = ui.Page.config

    def config(self, *a, **k):
        calls.append("page script")
        return real_config(self, *a, **k)

    monkeypatch.setattr(ui.Page, "config", config)
    return calls


@pytest.mark.parametrize("key, kind, value, redrawn", [
    ("histograms.view.layer", "selectbox", 0, ["percentile_bands", "histogram_heatmap"]),
    ("histograms.view.tap", "radio", "post_activation", list(BUILDERS)),
    ("histograms.view.step", "select_slider", 0, ["layer_histograms"]),
    ("histograms.view.log_y", "toggle", True, ["layer_histograms"]),
    ("histograms.view.bands", "radio", "tensorboard", ["percentile_bands"]),
    ("histograms.view.unit", "toggle", True, ["percentile_bands"]),
    ("histograms.view.log_color", "toggle", False, ["histogram_heatmap"]),
])
def test_a_display_change_rebuilds_only_the_figures_that_depend_on_it(trainings, rebuilt, key, kind, value, redrawn):
    at = _app()
    assert sorted(rebuilt) == sorted([*BUILDERS, "page script"])
    before = {_title(f): f for f in _figures(at)}
    rebuilt.clear()
    trainings.clear()
    getattr(at, kind)(key=key).set_value(value).run()
    assert not at.exception and not at.error
    # not the page script (it would call page.config and rebuild every figure), nor training
    assert rebuilt == redrawn and trainings == []
    figs = _figures(at)
    assert len(figs) == 3  # the parts not rerun are still on the page
    changed = [i for i, f in enumerate(figs) if f.to_json() != before.get(_title(f), go.Figure()).to_json()]
    assert changed == [BUILDERS.index(name) for name in redrawn]
    assert at.query_params[key.rsplit(".", 1)[1]] == str(value)


def test_several_display_changes_in_a_row_keep_the_page_consistent(trainings, rebuilt):
    at = _app()
    at.select_slider(key="histograms.view.step").set_value(40).run()
    at.selectbox(key="histograms.view.layer").set_value(1).run()
    at.radio(key="histograms.view.tap").set_value("post_activation").run()
    at.toggle(key="histograms.view.log_color").set_value(False).run()
    assert not at.exception and not at.error
    assert trainings == [] and rebuilt.count("page script") == 1
    figs = _figures(at)
    assert [_title(f) for f in figs] == ["Post-activation per layer at step 40",
                                          "Post-activation, all units of layer 2: 15/50/85th percentiles",
                                          "Post-activation of layer 2 over training"]
    assert "%{z:.2%} of values" in figs[2].data[0].hovertemplate  # linear colour: the hover reads z
    [heat_caption] = [c.value for c in at.caption if "one column per step" in c.value]
    assert "log scale" not in heat_caption
    # the page script runs again when a training setting changes, with the display settings kept
    at.selectbox(key="histograms.activation").set_value("tanh").run()
    assert not at.exception and rebuilt.count("page script") == 2
    assert [_title(f) for f in _figures(at)][0] == "Post-activation per layer at step 40"


def test_a_training_setting_changed_with_a_display_one_reruns_the_page(trainings, rebuilt):
    """A browser changes one control at a time; a test (or a replayed state) can change several.
    Then the page script runs, so the new training setting is not left unapplied."""
    at = _app()
    rebuilt.clear()
    at.toggle(key="histograms.view.log_color").set_value(False)
    at.selectbox(key="histograms.activation").set_value("sigmoid")
    at.run()
    assert not at.exception and not at.error
    assert "page script" in rebuilt and at.query_params["activation"] == "sigmoid"
    assert at.query_params["log_color"] == "False"
    run = ui.run_store().get(Config(steps=100, activation="sigmoid"))
    assert run is not None  # trained with the new setting


def test_an_error_while_a_part_redraws_is_explained_inside_it(monkeypatch):
    at = _app()
    real = histograms.histogram_heatmap

    def broken(*args, log_color=True, **kwargs):
        if not log_color:
            raise RuntimeError("heatmap exploded")
        return real(*args, log_color=log_color, **kwargs)

    monkeypatch.setattr(histograms, "histogram_heatmap", broken)
    at.toggle(key="histograms.view.log_color").set_value(False).run()
    assert not at.exception  # no traceback reaches the page
    assert len(at.error) == 1 and "Something went wrong (RuntimeError: heatmap exploded)" in at.error[0].value
    assert [_title(f) for f in _figures(at)][:2] == ["Pre-activation per layer at step 99",
                                                     "Pre-activation, all units of layer 3: 15/50/85th percentiles"]
    at.toggle(key="histograms.view.log_color").set_value(True).run()
    assert not at.exception and not at.error and len(_figures(at)) == 3


def test_download_all_holds_the_figures_shown_after_display_changes(monkeypatch):
    """The ZIP is made on click from the figures on the page now, not from those of the page
    script's last run: here the step and the colour scale changed since."""
    import io
    import zipfile

    import pandas as pd
    from streamlit.runtime.media_file_manager import MediaFileManager

    from bnviz import export

    deferred = {}
    real_add = MediaFileManager.add_deferred

    def add_deferred(self, data_callable, *args, **kwargs):
        file_id = real_add(self, data_callable, *args, **kwargs)
        deferred[file_id] = data_callable
        return file_id

    def no_png(*args, **kwargs):
        raise export.ExportUnavailable("no browser in this test")

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    monkeypatch.setattr(export, "figure_png", no_png)
    at = _app()
    at.select_slider(key="histograms.view.step").set_value(20).run()
    at.toggle(key="histograms.view.log_color").set_value(False).run()
    [zip_button] = [b for b in at.get("download_button") if b.label.startswith("Download all (ZIP)")]
    with zipfile.ZipFile(io.BytesIO(deferred[zip_button.proto.deferred_file_id]())) as archive:
        hist = pd.read_csv(io.BytesIO(archive.read("layer-histograms.csv")))
        heat = pd.read_csv(io.BytesIO(archive.read("histograms-over-training.csv")))
    run = ui.run_store().get(Config(steps=100))
    st = run.history.snapshot_at(20).taps[(0, "pre_activation")]
    filled = np.flatnonzero(st.counts)  # the bins drawn: the first to the last non-empty one
    drawn = hist[hist.trace == "with BN"]  # two rows per bin: its left and right edge, at its height
    edges = run.history.edges["pre_activation"][filled[0]:filled[-1] + 2]
    np.testing.assert_allclose(drawn.x, np.repeat(edges, 2)[1:-1], rtol=1e-6)
    np.testing.assert_allclose(drawn.y, np.repeat((st.counts / st.n)[filled[0]:filled[-1] + 1], 2), rtol=1e-6)
    steps, stats = run.history.tap_series(2, "pre_activation")
    shares = np.array([s.counts / s.n for s in stats]).T  # linear colour: z is the share itself
    np.testing.assert_allclose(np.sort(heat[heat.trace == "with BN"].z), np.sort(shares.ravel()), rtol=1e-6)
