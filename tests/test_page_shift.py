"""AppTest of the precise-BN / domain-shift page: it draws, redraws, and explains bad input."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/6_Precise_BN_and_domain_shift.py")


def _texts(elements) -> str:
    return " | ".join(e.value for e in elements)


def test_page_draws_all_figures_and_redraws_without_retraining():
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["steps"] = 100
    at.session_state["shift.view.momenta"] = "0.001,0.9"
    at.session_state["shift.view.ns"] = "1,8"
    at.run()
    assert not at.exception
    assert not at.error, _texts(at.error)
    assert len(at.get("plotly_chart")) == 4   # precise BN, shift curve, first layer, transfer
    labels = [m.label for m in at.metric]
    assert labels[:3] == ["momentum 0.1", "momentum 0.001", "momentum 0.9"] and "AdaBN gain" in labels
    at.slider(key="shift.view.amount").set_value(2.0).run()
    assert not at.exception and not at.get("status")   # shift settings never retrain the network
    assert at.query_params["amount"] == "2.0"


def test_bad_input_is_explained_not_raised():
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.query_params.update({"steps": "100", "momenta": "2,abc,0.9", "ns": "3,4", "amount": "abc", "ft_lr": "9",
                            "kind": "sideways"})
    at.run()
    assert not at.exception
    warnings = _texts(at.warning)
    assert "momentum '2'" in warnings and "momentum 'abc'" in warnings
    assert "N '3'" in warnings
    assert "amount: 'abc' is not a number" in warnings and "ft_lr 9.0 is outside" in warnings
    assert "near chance" in warnings      # the clamped learning rate 0.1 is too large here: said, not hidden
    assert len(at.get("plotly_chart")) == 4
    at.slider(key="shift.view.amount").set_value(0.0).run()
    assert "identical to the source domain" in _texts(at.info)


def test_view_figures_for_the_export_command():
    from bnviz.views import shift
    figures = shift.VIEW.figures(shift.DEFAULT.replace(steps=30), {})
    assert list(figures) == ["precise BN", "covariate shift", "first BN layer statistics", "transfer"]


def test_batch_of_one_is_explained():
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["batch_size"] = 1
    at.run()
    assert not at.exception
    assert "cannot train" in _texts(at.error) and "one sample has zero variance" in _texts(at.error)
    assert "no trained source network" in _texts(at.info)
