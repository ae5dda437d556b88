"""The issue-17 pages in a real browser: each trains, draws its charts, and exports a PNG; the
data-parallel page's processes are gone once it has drawn."""
import pytest

from conftest import ARTIFACTS, png_size, wait_for_charts

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

# (address, charts drawn, artifact name, a text the page shows once trained)
PAGES = [
    ("/Small_batch_remedies?steps=100&width=32&depth=2", 3, "small_batch", "GroupNorm + WS: two-class batches"),
    ("/Gradient_accumulation?steps=100&width=32&depth=2", 3, "grad_accumulation", "BN eval gap"),
    ("/BN_across_devices?steps=100&width=32&depth=2", 3, "data_parallel", "synchronized BN, 4 per device"),
    ("/Weight_decay_and_BN?steps=200&width=32&depth=2", 2, "weight_decay", "gradient norm ratio"),
]


def wait_idle(page) -> None:
    page.wait_for_timeout(500)
    page.wait_for_function("!document.querySelector(\"[data-testid='stStatusWidget']\")", timeout=300_000)


@pytest.mark.parametrize("address,charts,name,text", PAGES, ids=[p[2] for p in PAGES])
def test_page_draws_and_exports_a_png(page, app_url, address, charts, name, text):
    page.goto(app_url + address)
    wait_for_charts(page, charts, timeout_ms=600_000)
    page.get_by_text(text).first.wait_for()
    main = page.locator("[data-testid='stMain']").inner_text()
    assert "Something went wrong" not in main and "Traceback" not in main
    page.set_viewport_size({"width": 1400, "height": 1200 + 700 * charts})
    wait_idle(page)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})
    with page.expect_download() as info:
        page.get_by_role("button", name="Download PNG").first.click()
    data = open(info.value.path(), "rb").read()
    width, height = png_size(data)
    assert width >= 900 and height >= 300
