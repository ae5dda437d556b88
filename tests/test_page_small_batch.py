"""The small-batch remedies page (AppTest): both figures, controls in the URL, bad input explained."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/15_Small_batch_remedies.py")
pytestmark = pytest.mark.timeout(600)


def page(**query) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.query_params.update({"steps": "100", "width": "32", "depth": "2", **query})
    return at


def test_draws_both_figures_with_their_numbers_and_keeps_settings_in_the_url():
    at = page(ghost_size="2").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 3
    labels = [m.label for m in at.metric]
    assert "BatchNorm: two-class batches" in labels and "GroupNorm + WS: two-class batches" in labels
    assert at.session_state["small_batch.view.ghost_size"] == 2
    at.select_slider(key="small_batch.view.r_max").set_value(1.5).run()
    assert not at.exception and len(at.get("plotly_chart")) == 3
    assert at.query_params["r_max"] == "1.5" and at.query_params["ghost_size"] == "2"


def test_bad_input_is_explained():
    at = page(ghost_size="abc", d_max="99", batch_size="1").run()
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "ghost_size" in warning and "d_max" in warning
    assert at.session_state["small_batch.view.d_max"] == 5.0
    assert any("batch of one" in e.value for e in at.error)
    assert not at.get("plotly_chart")
