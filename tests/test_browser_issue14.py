"""Issue 14 in a real browser: the sidebar's sections, the momentum and placement sliders by their
accessible names, a momentum move that trains nothing, and the histograms played over training."""
import re

import pytest

from conftest import ARTIFACTS, start_server, stop_server, wait_for_charts

pytestmark = pytest.mark.browser


def _idle(page, timeout_ms: int = 300_000) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached",
                           timeout=timeout_ms)


def test_sidebar_has_sections_and_the_home_page_is_called_home(page, app_url):
    page.goto(app_url)
    nav = page.locator("[data-testid='stSidebarNav']")
    # On a new server the sidebar is first Streamlit's pages/ list, then app.py's sections, whose
    # pages appear a moment after their headers: wait for a section header and a page under it.
    page.wait_for_function("() => { const n = document.querySelector(\"[data-testid='stSidebarNav']\");"
                           " return !!n && n.innerText.includes('Beyond BN') && n.innerText.includes('Weight decay and BN'); }",
                           timeout=60_000)
    text = nav.inner_text()
    assert not re.search(r"View \d+ more", text), "every section in sight, none folded away"
    for section in ("Basics", "Training dynamics", "Inference", "Your runs"):
        assert section in text
    assert "Home" in text and "app" not in text.split()
    # an address from before the sections still opens its view
    page.goto(app_url + "/Running_statistics?steps=100")
    page.get_by_text("Running statistics", exact=False).first.wait_for()


def test_a_new_servers_first_visitor_on_a_views_address_gets_the_sections(browser):
    """Before any run has called st.navigation, Streamlit serves the pages/ folder its old way
    (a sidebar with "app" and no sections); the first visitor's deep link must not be served so."""
    proc, url = start_server()
    try:
        page = browser.new_page()
        page.goto(url + "/Running_statistics?steps=100")
        nav = page.locator("[data-testid='stSidebarNav']")
        nav.get_by_text("Training dynamics").wait_for(timeout=60_000)
        assert "app" not in nav.inner_text().split()
        assert page.locator("h1").first.inner_text().startswith("Running statistics")
        assert "/Running_statistics" in page.url
        page.close()
    finally:
        stop_server(proc)


def test_momentum_slider_moves_without_training_and_the_histograms_play(page, app_url):
    page.goto(app_url + "/Activation_histograms?steps=200&depth=2&width=32")
    wait_for_charts(page, 3, timeout_ms=300_000)
    _idle(page)
    momentum = page.get_by_role("slider", name=re.compile("momentum", re.I))
    placement = page.get_by_role("slider", name=re.compile("placement", re.I))
    assert momentum.count() == 1 and placement.count() == 1
    assert "0.1 (Keras 0.9)" in momentum.get_attribute("aria-valuetext")
    momentum.focus()
    momentum.press("ArrowLeft")
    page.wait_for_url(re.compile(r"momentum=0\.05"), timeout=60_000)
    _idle(page)
    assert page.get_by_text("network(s)…").count() == 0, "a momentum move must not train"
    assert "0.05 (Keras 0.95)" in momentum.get_attribute("aria-valuetext")

    page.get_by_text("Play the histograms over training").click()
    play = page.get_by_text("▶ Play")
    play.wait_for(timeout=120_000)
    play.click()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "histograms-played.png"), full_page=True)
    assert page.get_by_text(re.compile(r"^step \d+")).count() >= 1       # the animation's step label
