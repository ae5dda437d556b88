"""The Inside-BN, Why-BN-helps and Figure-1 pages in a real browser: they train, draw, react and export."""
import pytest

from conftest import ARTIFACTS, png_size, wait_for_charts

pytestmark = pytest.mark.browser


def slider(page, label: str):
    """The thumb of the Streamlit slider labelled ``label``: an <input type=range> carrying the label."""
    return page.locator(f"input[type='range'][aria-label='{label}']")


def main_text(page) -> str:
    return page.locator("[data-testid='stMain']").inner_text()


def wait_idle(page) -> None:
    """Wait until the script run is over: Streamlit shows its status widget ("Running...") while a
    rerun is under way, and the elements still to be redrawn are stale (faded) until then."""
    page.wait_for_timeout(500)
    page.wait_for_function("!document.querySelector(\"[data-testid='stStatusWidget']\")", timeout=180_000)


def screenshot(page, slug: str, height: int = 5200) -> None:
    """The whole page: Streamlit scrolls inside its own container, so full_page alone stops at the
    viewport; a tall viewport lets every chart render into the image."""
    page.set_viewport_size({"width": 1400, "height": height})
    wait_idle(page)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / f"{slug}.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_inside_bn_draws_reacts_and_exports_png(page, app_url):
    page.goto(app_url + "/Inside_BN?steps=100")
    wait_for_charts(page, 8)
    assert "largest |difference|" in main_text(page)
    thumb = slider(page, "gamma (scale, all features)")
    thumb.focus()
    thumb.press("ArrowRight")                       # gamma 1.0 -> 1.5
    page.wait_for_url("**gamma=1.5**")
    page.get_by_text("y = 1.5 x_hat + (0)").wait_for()
    wait_for_charts(page, 8)
    screenshot(page, "inside", 7000)
    with page.expect_download() as info:
        page.get_by_role("button", name="Download PNG").first.click()
    data = open(info.value.path(), "rb").read()
    assert png_size(data) == (1800, 720)            # Algorithm 1 figure: 900 x 360 at scale 2
    assert info.value.suggested_filename == "algorithm-1-step-by-step.png"


def test_why_bn_helps_runs_the_three_experiments(page, app_url):
    page.goto(app_url + "/Why_BN_helps?steps=100&depth=2")
    wait_for_charts(page, 3)
    page.get_by_text("largest stable learning rate, with BN").wait_for()
    thumb = slider(page, "shift: m drawn from U(-shift, shift)")
    thumb.focus()
    thumb.press("ArrowRight")                       # noise shift 1.0 -> 2.0: the noisy run trains again
    page.wait_for_url("**noise_shift=2.0**")
    page.get_by_text("final test accuracy, noisy BN (shift ±2, scale 1-2)").wait_for()
    wait_for_charts(page, 3)
    screenshot(page, "why")


def test_figure_1_trains_both_networks_and_explains_mnist(page, app_url):
    page.goto(app_url + "/Figure_1_reproduction?steps=200")
    wait_for_charts(page, 1)
    page.get_by_text("test accuracy, without BN").wait_for()
    text = main_text(page)
    assert "1,797 images of 8x8" in text and "toggle is disabled" in text
    toggle = page.locator("label").filter(has_text="Run on local MNIST files").locator("input")
    assert toggle.is_disabled() and not toggle.is_checked()
    screenshot(page, "figure1")
