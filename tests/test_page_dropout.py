"""AppTest of the dropout page: it draws, and explains bad input."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/5_Dropout_and_BN.py")


def _texts(elements) -> str:
    return " | ".join(e.value for e in elements)


def test_page_draws_all_figures():
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["steps"] = 100
    at.session_state["dropout.view.keeps"] = "0.5,0.9"
    at.run()
    assert not at.exception
    assert not at.error, _texts(at.error)
    assert len(at.get("plotly_chart")) == 4   # by layer, per unit, vs keep, the fix
    assert len(at.metric) == 3                # one per ordering
    assert at.query_params["keeps"] == "0.5,0.9" and at.query_params["dropout"] == "0.5"
    at.radio(key="dropout.view.units").set_value("after_activation").run()
    assert not at.exception and not at.get("status")   # display only: nothing retrained


def test_bad_input_is_explained_not_raised():
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.query_params.update({"steps": "100", "dropout": "0", "keeps": "0.05,abc,1,0.5", "sweep_position": "nowhere"})
    at.run()
    assert not at.exception
    warnings = _texts(at.warning)
    assert "Dropout is 0" in warnings
    assert "0.05 is outside" in warnings and "'abc' is not a number" in warnings
    assert len(at.get("plotly_chart")) == 4


def test_view_figures_for_the_export_command():
    from bnviz.views import dropout
    figures = dropout.VIEW.figures(dropout.DEFAULT.replace(steps=30), {})
    assert list(figures) == ["variance ratio by layer", "variance ratio vs keep probability",
                             "variance ratio per unit", "recomputed statistics"]


def test_batch_of_one_is_explained():
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["batch_size"] = 1
    at.run()
    assert not at.exception
    assert "cannot train" in _texts(at.error) and "one sample has zero variance" in _texts(at.error)
