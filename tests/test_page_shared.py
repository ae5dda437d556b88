"""The Which-values-share-statistics page (AppTest): the figure, the table checked against torch, controls."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/14_Which_values_share_statistics.py")


def page(**query) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.query_params.update(query)
    return at


def table(at) -> dict:
    return at.dataframe[0].value.set_index("method")


@pytest.mark.timeout(600)
def test_sets_table_and_controls():
    at = page().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 1
    t = table(at)
    assert list(t["values in the set"]) == [8 * 8 * 8, 8 * 8 * 8, 8 * 8, 4 * 8 * 8]
    assert (t["x_hat = (x - mu) / sqrt(sigma^2 + eps)"] - t["torch's x_hat"]).abs().max() < 1e-9
    at.selectbox(key="shared.view.layer").set_value("conv 2").run()
    at.selectbox(key="shared.view.groups").set_value(8).run()
    assert not at.exception and at.query_params["groups"] == "8"
    t = table(at)
    assert list(t["values in the set"]) == [8 * 4 * 4, 16 * 4 * 4, 4 * 4, 2 * 4 * 4]


@pytest.mark.timeout(600)
def test_bad_input_is_explained():
    at = page(n="99", groups="3", layer="conv 9", h="x").run()
    assert not at.exception and not at.error
    assert any("h" in w.value for w in at.warning)
    assert any("divides" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 1
    at = page(dataset="moons").run()
    assert not at.exception and any("images" in e.value for e in at.error)
