"""The ReLU after BN page in a real browser: three orderings trained on first load, the
rectified-Gaussian check at step 0, and a chart exported as PNG."""
import re

import pytest

from conftest import ARTIFACTS, png_size, wait_for_charts
from test_browser_histograms import wait_for_titles

pytestmark = pytest.mark.browser


def test_relu_page_shows_the_theory_check_at_initialization_and_exports(page, app_url):
    page.goto(app_url + "/ReLU_after_BN?step=0")
    wait_for_charts(page, 5, timeout_ms=300_000)
    page.get_by_text("BN→ReLU: [Linear → BN → ReLU] × 3 → Linear (classifier)").wait_for()
    wait_for_titles(page, "BN→ReLU output vs the rectified Gaussian at step 0")
    notes = page.locator(".js-plotly-plot .annotation-text").evaluate_all("els => els.map(e => e.textContent)")
    predicted = [n for n in notes if n.startswith("exactly 0:")]
    assert len(predicted) == 3 and all("50.0% predicted" in n for n in predicted)
    recorded = [float(re.search(r"([\d.]+)% recorded", n).group(1)) / 100 for n in predicted]
    assert all(abs(r - 0.5) < 0.05 for r in recorded), recorded
    page.screenshot(path=str(ARTIFACTS / "relu-step0.png"), full_page=True)

    with page.expect_download() as info:
        page.get_by_role("button", name="Download PNG").nth(1).click()
    assert info.value.suggested_filename == "bn-relu-vs-rectified-gaussian.png"
    assert png_size(open(info.value.path(), "rb").read()) == (1800, 920)

    slider = page.get_by_role("slider", name="Step")
    slider.focus()
    slider.press("End")
    wait_for_titles(page, "BN→ReLU output vs the rectified Gaussian at step 999")
    page.screenshot(path=str(ARTIFACTS / "relu.png"), full_page=True)
