"""Exports on a page under Streamlit's AppTest: drawing a page (or redrawing a part) renders no
image (the browser is asked only when a download is clicked), and the Presentation setting,
from a link or its toggle, restyles every chart without changing its data and lives in the URL."""
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

from bnviz import animate, export
from conftest import ROOT

PAGE = str(ROOT / "pages" / "1_Activation_histograms.py")


@pytest.fixture
def renders(monkeypatch):
    """Every image or animation the export code is asked for."""
    asked = []
    real_images, real_gif = export.figure_images, animate.gif
    monkeypatch.setattr(export, "figure_images", lambda *a, **k: asked.append("image") or real_images(*a, **k))
    monkeypatch.setattr(animate, "gif", lambda *a, **k: asked.append("gif") or real_gif(*a, **k))
    return asked


def app(**query: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=600)
    for key, value in {"steps": "100", **query}.items():
        at.query_params[key] = value
    return at.run()


def charts(at: AppTest) -> list[dict]:
    return [pio.from_json(chart.proto.spec).to_dict() for chart in at.get("plotly_chart")]


@pytest.mark.timeout(600)
def test_drawing_the_page_renders_no_image(renders):
    at = app()
    assert not at.exception and not at.error
    labels = [b.label for b in at.get("download_button")]
    assert labels.count("Download PNG") == labels.count("Download SVG") == labels.count("Download PDF") == 3
    assert "Download GIF: animation over training" in labels and labels[-1].startswith("Download all (ZIP)")
    at.toggle(key="histograms.view.log_y").set_value(True).run()       # a part redrawn: its buttons too
    assert not at.exception
    assert renders == []


@pytest.mark.timeout(600)
def test_presentation_from_a_link_and_its_toggle(renders):
    at = app(presentation="1")
    assert not at.exception and not at.error
    assert at.toggle(key="presentation").value is True
    big = charts(at)
    assert len(big) == 3
    assert all(fig["layout"]["font"]["size"] == pytest.approx(12 * export.PRESENTATION_SCALE) for fig in big)
    assert at.query_params["presentation"] == "1"

    at.toggle(key="presentation").set_value(False).run()
    assert not at.exception
    plain = charts(at)
    assert all("size" not in fig["layout"].get("font", {}) for fig in plain)
    assert "presentation" not in at.query_params
    # the same runs drawn: the data of every trace are the same, only the style changed
    assert [[t.get("y") for t in f["data"]] for f in big] == [[t.get("y") for t in f["data"]] for f in plain]
    assert renders == []
