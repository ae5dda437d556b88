"""The four views of issue 16 in a real browser: each draws its first chart, then all of them, is
screenshotted into tests/artifacts, and exports a real PNG from its first chart."""
import time

import pytest

from conftest import ARTIFACTS, png_size

pytestmark = pytest.mark.browser

# page path, query (small runs), charts on the page, (width, height) of the first chart's PNG
PAGES = {
    "residual": ("Residual_networks", "steps=100&blocks=4", 3, (1800, 1080)),
    "depth": ("Gradients_vs_depth", "depth=10", 3, (1800, 1040)),
    "transformer": ("Transformers", "steps=100&layers=2", 4, (1800, 920)),
    "shared": ("Which_values_share_statistics", "", 1, (1800, 1640)),
}


def charts_drawn(page, count: int, timeout_ms: int = 300_000) -> None:
    """Wait until ``count`` Plotly charts have drawn (each has its .main-svg layers)."""
    page.wait_for_function(
        f"[...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg')).length >= {count}",
        timeout=timeout_ms)


def wait_idle(page) -> None:
    page.wait_for_timeout(500)
    page.wait_for_function("!document.querySelector(\"[data-testid='stStatusWidget']\")", timeout=300_000)


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("slug", list(PAGES))
def test_page_draws_screenshots_and_exports(page, app_url, slug):
    path, query, count, size = PAGES[slug]
    start = time.monotonic()
    page.goto(f"{app_url}/{path}?{query}")
    charts_drawn(page, 1)
    print(f"\n[issue16] {slug}: first chart after {time.monotonic() - start:.1f} s")
    charts_drawn(page, count)
    wait_idle(page)
    text = page.locator("[data-testid='stMain']").inner_text()
    assert "Something went wrong" not in text and "Traceback" not in text
    page.set_viewport_size({"width": 1400, "height": 4200})
    page.wait_for_timeout(2000)
    page.screenshot(path=str(ARTIFACTS / f"{slug}.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})
    with page.expect_download(timeout=120_000) as info:
        page.get_by_role("button", name="Download PNG").first.click()
    data = open(info.value.path(), "rb").read()
    assert png_size(data) == size
    assert len(data) > 20_000                        # a drawn chart, not an empty canvas
