"""The Why-BN-helps page (AppTest): three experiments drawn, controls, bad input."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/8_Why_BN_helps.py")


def page(**query) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.query_params.update({"steps": "100", "depth": "2", **query})
    return at


def test_three_experiments_are_drawn_with_their_numbers():
    at = page().run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 3
    labels = [m.label for m in at.metric]
    assert "largest stable learning rate, with BN" in labels and "largest stable learning rate, without BN" in labels
    assert any(label.startswith("median effective beta") for label in labels)
    assert any(label.startswith("final test accuracy, noisy BN") for label in labels)


def test_experiment_controls_redraw_and_go_into_the_url():
    at = page().run()
    at.select_slider(key="why.view.step_max").set_value(0.4).run()
    at.select_slider(key="why.view.noise_shift").set_value(2.0).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 3
    assert at.query_params["step_max"] == "0.4" and at.query_params["noise_shift"] == "2.0"
    assert any(m.label.startswith("final test accuracy, noisy BN (shift ±2,") for m in at.metric)


def test_bad_input_is_explained():
    at = page(step_max="abc", noise_scale="100", batch_size="1").run()
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "step_max" in warning and "noise_scale" in warning
    assert at.session_state["why.view.noise_scale"] == 5.0
    assert any("batch of one" in e.value for e in at.error)
    assert not at.get("plotly_chart")
