"""The ReLU after BN page under Streamlit's AppTest: three orderings trained, the theory overlay
agreeing with the recording at initialization, the dropout orderings, and bad input explained."""
import math

import plotly.graph_objects as go
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

from bnviz import ui
from bnviz.config import Config
from bnviz.views import registry, relu, render
from conftest import ROOT

PAGE = str(ROOT / "pages" / "3_ReLU_after_BN.py")
QUICK = {"steps": "100"}
CHARTS = ["next-layer input", "BN-ReLU vs rectified Gaussian", "moments across depth", "gamma and beta over training",
          "ReLU of a shifted Gaussian"]


def _app(**query: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=600)
    for key, value in {**QUICK, **query}.items():
        at.query_params[key] = value
    return at.run()


def _figures(at: AppTest) -> list[go.Figure]:
    return [pio.from_json(chart.proto.spec) for chart in at.get("plotly_chart")]


def _orderings(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "The three networks" in m.value)


def test_runs_are_the_three_orderings_of_one_relu_network():
    config = relu.DEFAULT.replace(activation="tanh", norm="none", placement="after", seed=3)
    runs = relu.runs(config)
    assert list(runs) == [relu.BN_RELU, relu.RELU_BN, relu.NO_BN]
    assert {c.activation for c in runs.values()} == {"relu"} and {c.seed for c in runs.values()} == {3}
    assert [(c.norm, c.placement) for c in runs.values()] == [("batchnorm", "before"), ("batchnorm", "after"),
                                                               ("none", "before")]
    assert relu.ordering(runs[relu.BN_RELU].replace(dropout=0.2)) == "[Linear → BN → ReLU → Dropout] × 3 → Linear (classifier)"
    assert relu.ordering(runs[relu.RELU_BN].replace(dropout=0.2, dropout_position="before_norm")) == \
        "[Linear → ReLU → Dropout → BN] × 3 → Linear (classifier)"
    assert relu.ordering(runs[relu.NO_BN].replace(dropout=0.2, dropout_position="before_output")) == \
        "[Linear → ReLU] × 3 → Dropout → Linear (classifier)"


def test_page_trains_three_orderings_and_draws_every_chart():
    at = _app()
    assert not at.exception and not at.error
    assert len(_figures(at)) == len(CHARTS)
    text = _orderings(at)
    assert "BN→ReLU: [Linear → BN → ReLU] × 3" in text and "ReLU→BN: [Linear → ReLU → BN] × 3" in text
    assert "no BN: [Linear → ReLU] × 3" in text
    for label in (relu.BN_RELU, relu.RELU_BN, relu.NO_BN):
        assert ui.run_store().get(relu.runs(relu.DEFAULT.replace(steps=100))[label]) is not None
    assert "what to look for" in at.caption[0].value.lower()


def test_at_step_0_the_page_shows_the_rectified_gaussian_and_the_recording_agrees():
    at = _app(step="0")
    assert not at.exception and not at.error
    check, moments = _figures(at)[1], _figures(at)[2]
    assert check.layout.title.text == "BN→ReLU output vs the rectified Gaussian at step 0"
    run = ui.run_store().get(relu.runs(relu.DEFAULT.replace(steps=100))[relu.BN_RELU])
    notes = [a.text for a in check.layout.annotations if a.text.startswith("exactly 0")]
    assert len(notes) == 3
    for layer, note in enumerate(notes):
        measured = run.history.snapshots[0].taps[(layer, "post_activation")].zero_frac
        assert note == f"exactly 0:<br>{measured:.1%} recorded<br>50.0% predicted"
        assert abs(measured - 0.5) < 0.05
    predicted = [t for t in moments.data if t.legendgroup == "theory"]
    assert list(predicted[0].y) == pytest.approx([1 / math.sqrt(2 * math.pi)] * 3)
    assert list(predicted[1].y) == pytest.approx([math.sqrt(0.5 - 1 / (2 * math.pi))] * 3)
    assert list(predicted[2].y) == [0.5] * 3


def test_dropout_controls_change_the_orderings_and_retrain():
    at = _app()
    at.slider(key="relu.dropout").set_value(0.5).run()
    assert "BN→ReLU: [Linear → BN → ReLU → Dropout] × 3" in _orderings(at)
    at.radio(key="relu.dropout_position").set_value("before_norm").run()
    assert not at.exception and not at.error
    assert "ReLU→BN: [Linear → ReLU → Dropout → BN] × 3" in _orderings(at)
    assert at.query_params["dropout"] == "0.5" and at.query_params["dropout_position"] == "before_norm"
    assert len(_figures(at)) == len(CHARTS)


def test_display_controls_and_bad_links():
    at = _app(activation="sigmoid", layer="7", step="-5", log_y="yes")
    assert not at.exception and not at.error
    assert "activation has no control on this page" in at.warning[0].value
    assert at.selectbox(key="relu.view.layer").value == 2
    assert at.select_slider(key="relu.view.step").value == 0
    assert _figures(at)[0].layout.yaxis.type == "log"
    at.selectbox(key="batch_size").set_value(1).run()
    assert not at.exception
    assert "cannot train" in at.error[0].value


def test_view_is_registered_and_renders_for_export():
    assert registry()["relu"] is relu.VIEW
    figs = render(relu.VIEW, Config(steps=30, width=16, depth=2, record_every=10))
    assert list(figs) == CHARTS


@pytest.mark.parametrize("key, kind, value, redrawn", [
    ("relu.view.layer", "selectbox", 0, ["next_layer_input"]),
    ("relu.view.log_y", "toggle", True, ["next_layer_input"]),
    ("relu.view.step", "select_slider", 0,
     ["next_layer_input", "rectified_gaussian_check", "relu_moments", "shifted_relu_theory"]),
])
def test_a_display_change_rebuilds_only_the_figures_drawn_with_it(monkeypatch, key, kind, value, redrawn):
    """Each chart is a part of the page (ui.Page.part): a display change reruns the parts drawn with
    it, not the page script (which would call page.config and rebuild every figure)."""
    at = _app()
    calls: list[str] = []
    for name in ("next_layer_input", "rectified_gaussian_check", "relu_moments", "gamma_beta_over_training",
                 "shifted_relu_theory"):
        real = getattr(relu, name)
        monkeypatch.setattr(relu, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    real_config = ui.Page.config
    monkeypatch.setattr(ui.Page, "config", lambda self, *a, **k: calls.append("page script") or real_config(self, *a, **k))
    getattr(at, kind)(key=key).set_value(value).run()
    assert not at.exception and not at.error
    assert calls == redrawn
    assert len(_figures(at)) == len(CHARTS)
    assert at.query_params[key.rsplit(".", 1)[1]] == str(value)
