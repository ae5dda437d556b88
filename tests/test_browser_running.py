"""The running-statistics page in a real browser: it trains on first load, redraws when the momenta
change, shows them in Keras' convention, and exports a PNG."""
import pytest

from conftest import ARTIFACTS, png_size, wait_for_charts

pytestmark = pytest.mark.browser


def _legend_texts(pg) -> list[str]:
    return pg.locator(".js-plotly-plot .legendtext").all_inner_texts()


def test_running_page_trains_redraws_on_momentum_change_and_exports_png(page, app_url):
    page.goto(app_url + "/Running_statistics")
    wait_for_charts(page, 5, timeout_ms=240_000)
    page.get_by_text("largest gap, PyTorch 0.01").wait_for()
    assert "PyTorch 0.9" not in _legend_texts(page)

    # Add momentum 0.9 to the stream's momenta: the stream charts redraw with it, no retraining.
    momenta = page.get_by_test_id("stMultiSelect").filter(has_text="Momenta").first
    momenta.locator("input").click()
    page.get_by_role("option", name="PyTorch 0.9 = Keras 0.1", exact=True).click()
    page.keyboard.press("Escape")
    page.wait_for_function("[...document.querySelectorAll('.js-plotly-plot .legendtext')]"
                           ".some(e => e.textContent === 'PyTorch 0.9')")
    page.wait_for_function("location.search.includes('stream_momenta=0.01%2C0.1%2C0.5%2C0.9%2Cnone')"
                           " || location.search.includes('stream_momenta=0.01,0.1,0.5,0.9,none')")

    # The same momenta in Keras' convention: 0.01 is Keras 0.99.
    page.get_by_text("Keras (weight of the old value = 1 - m)").click()
    page.wait_for_function("[...document.querySelectorAll('.js-plotly-plot .legendtext')]"
                           ".some(e => e.textContent === 'Keras 0.99')")
    wait_for_charts(page, 5)
    # Streamlit scrolls inside its main section, so a full-page shot needs a viewport as tall as the page.
    page.set_viewport_size({"width": 1400, "height": 6200})
    page.wait_for_timeout(2500)  # charts resize to the new viewport
    page.screenshot(path=str(ARTIFACTS / "running.png"), full_page=True)

    with page.expect_download() as info:
        page.get_by_role("button", name="Download PNG").first.click()
    data = open(info.value.path(), "rb").read()
    assert png_size(data) == (1800, 920)  # 900 x 460 at scale 2
    assert info.value.suggested_filename == "stream-running-mean.png"
