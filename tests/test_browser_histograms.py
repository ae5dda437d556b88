"""The Activation histograms page in a real browser: it trains on first load, scrubs steps, says
when a tap is missing, and keeps the display settings in the URL."""
import re

import pytest

from conftest import ARTIFACTS, wait_for_charts

pytestmark = pytest.mark.browser


def wait_for_titles(page, *titles: str, timeout_ms: int = 300_000) -> None:
    """Wait until a chart with each of these exact titles is drawn."""
    page.wait_for_function("want => want.every(w => [...document.querySelectorAll('.js-plotly-plot .gtitle')]"
                           ".some(t => t.textContent === w))", arg=list(titles), timeout=timeout_ms)


def test_histograms_page_trains_scrubs_and_explains_a_missing_tap(page, app_url):
    page.goto(app_url + "/Activation_histograms")
    wait_for_charts(page, 3, timeout_ms=300_000)
    wait_for_titles(page, "Pre-activation per layer at step 999",
                    "Pre-activation, all units of layer 3: 15/50/85th percentiles",
                    "Pre-activation of layer 3 over training")
    page.screenshot(path=str(ARTIFACTS / "histograms.png"), full_page=True)

    page.get_by_text("normalization output", exact=True).click()
    page.get_by_text("without BN has no normalization output").wait_for()
    slider = page.get_by_role("slider", name="Step")
    # While Streamlit reruns, the previous run's slider can linger (faded) beside the new one.
    for _ in range(600):
        if slider.count() == 1:
            break
        page.wait_for_timeout(100)
    slider.focus()
    slider.press("Home")
    wait_for_titles(page, "Normalization output per layer at step 0")
    page.wait_for_url(re.compile(r"step=0"))
    assert "tap=norm_output" in page.url
    page.screenshot(path=str(ARTIFACTS / "histograms-bn-output-step0.png"), full_page=True)


def test_a_shared_link_opens_the_same_view(page, app_url):
    page.goto(app_url + "/Activation_histograms?tap=post_activation&step=500&bands=tensorboard&layer=0")
    wait_for_charts(page, 3, timeout_ms=300_000)
    wait_for_titles(page, "Post-activation per layer at step 500",
                    "Post-activation, all units of layer 1: 0/7/16/31/50/69/84/93/100th percentiles")


def test_a_display_control_redraws_its_part_only(page, app_url):
    """The log-colour toggle reruns the heatmap's part of the page (a fragment), not the page script:
    the server sends that part's few elements, not the whole page's, and the other charts stay."""
    page.add_init_script("""(() => { const Original = window.WebSocket; window.__received = 0;
        window.WebSocket = class extends Original { constructor(...a) { super(...a);
            this.addEventListener('message', () => { window.__received += 1; }); } }; })();""")
    page.goto(app_url + "/Activation_histograms")
    wait_for_charts(page, 3, timeout_ms=300_000)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached",
                           timeout=300_000)
    hist = page.locator(".js-plotly-plot").first
    hist.evaluate("e => { e.__before = true; }")
    before = page.evaluate("window.__received")
    page.get_by_text("Log colour scale", exact=True).click()
    page.get_by_text("Colour: share of that step's values in the bin.", exact=False).wait_for()
    page.wait_for_url(re.compile(r"log_color=False"))
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached")
    received = page.evaluate("window.__received") - before
    # the heatmap part: its chart, caption, buttons, the toggle, and the run's status messages;
    # the page script would send every element of the page again (some 60)
    assert received < 30, received
    assert page.locator(".js-plotly-plot").first.evaluate("e => e.__before === true")  # the histograms stayed
    assert page.get_by_text("network(s)…").count() == 0  # nothing retrained
