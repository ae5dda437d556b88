"""The weight-decay page (AppTest): the x k check's numbers, both figures, bad input explained."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/18_Weight_decay_and_BN.py")
pytestmark = pytest.mark.timeout(600)


def page(**query) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.query_params.update({"steps": "100", "width": "32", "depth": "2", **query})
    return at


def _metric(at, start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(start))


def test_check_and_figures():
    at = page().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 2
    assert _metric(at, "gradient norm ratio") == "0.1000"
    assert float(_metric(at, "largest change of a logit")) < 1e-3
    at.select_slider(key="weight_decay.view.factor").set_value(100.0).run()
    assert not at.exception and _metric(at, "gradient norm ratio") == "0.0100"
    assert at.query_params["factor"] == "100.0"


def test_bad_input_is_explained():
    at = page(decay="x", factor="1e9", batch_size="1").run()
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "decay" in warning and "factor" in warning
    assert any("batch of one" in e.value for e in at.error)
