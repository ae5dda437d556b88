"""The batch-size, dropout and precise-BN / shift pages in a real browser: default settings train and
draw, a control redraws, the address bar keeps it, and a chart downloads as a PNG."""
import pytest

from conftest import ARTIFACTS, png_size, wait_for_charts

pytestmark = pytest.mark.browser

SWEEP_TIMEOUT_MS = 400_000   # the machine running the tests may be shared: be patient


def _main_text(page) -> str:
    return page.locator("[data-testid='stMain']").inner_text()


def _settle(page) -> None:
    """Wait until the script run is over (Streamlit shows its status widget while it runs)."""
    page.wait_for_timeout(500)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=SWEEP_TIMEOUT_MS)


def _screenshot(page, slug: str, height: int) -> None:
    """Streamlit scrolls inside its main section: a full-page shot needs a viewport as tall as the page."""
    _settle(page)
    page.set_viewport_size({"width": 1400, "height": height})
    page.wait_for_timeout(2500)   # charts resize to the new width
    page.screenshot(path=str(ARTIFACTS / f"{slug}.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def _download_first_png(page) -> tuple[int, int]:
    button = page.get_by_role("button", name="Download PNG").first
    with page.expect_download() as info:
        button.click()
    assert info.value.suggested_filename.endswith(".png")
    return png_size(open(info.value.path(), "rb").read())


def test_batchsize_page_from_a_link(page, app_url):
    # A shorter sweep than the default (24 networks of 300 steps), through the URL a user would share.
    page.goto(app_url + "/Train_vs_eval_and_batch_size?steps=100&sizes=2,8,32")
    wait_for_charts(page, 5, timeout_ms=SWEEP_TIMEOUT_MS)
    page.get_by_text("sweep runs; their training took").wait_for()   # the page's last line
    text = _main_text(page)
    assert "Wu & He" in text and "34.7" in text
    box = page.get_by_label("Test sample", exact=True).and_(page.get_by_test_id("stNumberInputField"))
    box.fill("7")
    box.press("Enter")
    page.get_by_text("Test sample #7").first.wait_for()
    page.wait_for_function("window.location.search.includes('sample=7')")   # the link follows the control
    assert "sizes=2%2C8%2C32" in page.url.replace(",", "%2C")
    wait_for_charts(page, 5)
    _screenshot(page, "batchsize", 6200)
    assert _download_first_png(page) == (1800, 920)


def test_dropout_page(page, app_url):
    page.goto(app_url + "/Dropout_and_BN")
    wait_for_charts(page, 4, timeout_ms=SWEEP_TIMEOUT_MS)
    page.get_by_text("3. Three orderings, and the fix").wait_for()
    units = page.get_by_test_id("stRadio").filter(has_text="Per-unit view")
    units.get_by_text("Linear-BN-ReLU-dropout").click()   # per-unit view of the other ordering
    page.wait_for_function("window.location.search.includes('units=after_activation')")
    wait_for_charts(page, 4)
    _screenshot(page, "dropout", 5200)
    assert _download_first_png(page) == (1800, 920)


def test_shift_page(page, app_url):
    page.goto(app_url + "/Precise_BN_and_domain_shift")
    wait_for_charts(page, 4, timeout_ms=SWEEP_TIMEOUT_MS)
    page.get_by_text("AdaBN gain").wait_for()
    page.get_by_test_id("stRadio").filter(has_text="Shift of the test domain").get_by_text("scale", exact=True).click()
    page.wait_for_function("window.location.search.includes('kind=scale')")
    page.get_by_text("Covariate shift (scale)").first.wait_for()
    _screenshot(page, "shift", 5200)
    assert _download_first_png(page) == (1800, 1080)   # precise BN: 900 x 540 (room for its legend) at scale 2


def test_shift_link_with_bad_values_explains(page, app_url):
    page.goto(app_url + "/Precise_BN_and_domain_shift?steps=100&amount=0&ns=3,8&momenta=0.1")
    wait_for_charts(page, 4, timeout_ms=SWEEP_TIMEOUT_MS)
    text = _main_text(page)
    assert "identical to the source domain" in text
    assert "N '3'" in text
