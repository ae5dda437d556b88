"""The Gradients-vs-depth page (AppTest): figures, metrics, controls, bad input."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/12_Gradients_vs_depth.py")


def page(**query) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.query_params.update({"depth": "10", **query})
    return at


@pytest.mark.timeout(600)
def test_figures_metrics_and_controls():
    at = page().run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 3
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["theory (Yang et al. 2019)"] == "1.211"
    assert 1.0 < float(metrics["measured growth per layer, BN-ReLU no skips"]) < 1.5
    at.select_slider(key="depth.view.step").set_value(50).run()
    assert not at.exception and at.query_params["step"] == "50"
    at.select_slider(key="depth.view.depth").set_value(5).run()
    assert not at.exception and len(at.get("plotly_chart")) == 3


@pytest.mark.timeout(600)
def test_bad_input_is_explained():
    at = page(depth="1000", step="x", batch_size="1").run()
    assert not at.exception
    assert any("batch of one" in e.value for e in at.error)
    assert at.session_state["depth.view.depth"] == 50


@pytest.mark.timeout(600)
def test_a_link_sets_the_step_and_bad_values_are_noted():
    at = page(step="20").run()
    assert at.session_state["depth.view.step"] == 20
    at = page(step="x").run()
    assert not at.exception and any("step" in w.value for w in at.warning)


@pytest.mark.timeout(600)
def test_seeds_give_an_interval_of_the_growth():
    at = page(seeds="3").run()
    assert not at.exception and not at.error
    growth = next(m for m in at.metric if m.label == "measured growth per layer, BN-ReLU no skips")
    mean, half = (float(v) for v in growth.value.split(" ± "))
    assert 1.0 < mean < 1.5 and 0 < half < 0.3
