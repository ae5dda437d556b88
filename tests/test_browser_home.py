"""The home page in a real browser: it trains on first load, draws, exports, and restores a URL."""
import pytest

from conftest import ARTIFACTS, png_size, wait_for_charts

pytestmark = pytest.mark.browser


def test_home_trains_on_first_load_and_exports_png(page, app_url):
    page.goto(app_url)
    wait_for_charts(page, 1)
    page.get_by_text("test accuracy, with batchnorm").wait_for()
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
    buttons = page.get_by_role("button", name="Download PNG")
    assert buttons.count() == 2  # BN on one batch (drawn before torch is imported), then the training run
    expected = [("batchnorm-on-one-feature.png", (1800, 720)),  # 900 x 360 at scale 2
                ("training-with-and-without-bn.png", (1800, 920))]  # 900 x 460 at scale 2
    for i, (name, size) in enumerate(expected):
        with page.expect_download() as info:
            buttons.nth(i).click()
        assert info.value.suggested_filename == name
        assert png_size(open(info.value.path(), "rb").read()) == size


def test_shared_url_restores_settings_and_reports_clamped_values(page, app_url):
    page.goto(app_url + "/?activation=tanh&steps=300&lr=99")
    wait_for_charts(page, 1)
    page.get_by_text("Some settings in the link were adjusted").wait_for()
    assert "activation=tanh" in page.url and "steps=300" in page.url
