"""The home page in a real browser: it trains on first load, draws, exports, and restores a URL."""
import pytest

from conftest import ARTIFACTS, png_size, wait_for_charts

pytestmark = pytest.mark.browser


def test_home_trains_on_first_load_and_exports_png(page, app_url):
    page.goto(app_url)
    wait_for_charts(page, 1)
    page.get_by_text("test accuracy, with batchnorm").wait_for()
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
    button = page.get_by_role("button", name="Download PNG").first
    with page.expect_download() as info:
        button.click()
    path = info.value.path()
    data = open(path, "rb").read()
    width, height = png_size(data)
    assert (width, height) == (1800, 920)  # 900 x 460 at scale 2
    assert info.value.suggested_filename.endswith(".png")


def test_shared_url_restores_settings_and_reports_clamped_values(page, app_url):
    page.goto(app_url + "/?activation=tanh&steps=300&lr=99")
    wait_for_charts(page, 1)
    page.get_by_text("Some settings in the link were adjusted").wait_for()
    assert "activation=tanh" in page.url and "steps=300" in page.url
