"""The Activation histograms page under Streamlit's AppTest: it trains both runs, draws the
recorded numbers, redraws on display controls without retraining, and explains bad input."""
import base64

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

from bnviz import ui
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
    """Counts the networks the page trains (cache hits do not count)."""
    calls = []
    real = ui.train

    def counting(config, progress=None, **kwargs):
        calls.append(config)
        return real(config, progress, **kwargs)

    monkeypatch.setattr(ui, "train", counting)
    return calls


def test_page_draws_the_recorded_histograms_of_both_runs():
    at = _app()
    assert not at.exception and not at.error
    figs = _figures(at)
    assert [_title(f) for f in figs] == [
        "Pre-activation per layer at step 99",
        "Pre-activation, all units of layer 3: 15/50/85th percentiles",
        "Pre-activation of layer 3 over training"]
    bars = [t for t in figs[0].data if t.type == "bar"]
    assert len(bars) == 6  # 2 runs x 3 layers
    run = ui.run_store().get(Config(steps=100))
    assert run is not None
    st = run.history.snapshot_at(99).taps[(0, "pre_activation")]
    with_bn_layer1 = next(t for t in bars if t.legendgroup == "with BN" and t.xaxis == "x")
    np.testing.assert_allclose(values(with_bn_layer1.y), st.counts / st.n)
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
