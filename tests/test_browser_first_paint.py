"""A fresh server lets the browser draw the home page's first chart before it imports torch.

The oracle is the operating system: the moment torch's shared library appears in the server's
memory map (polled from /proc), against the moment the browser drew the chart's SVG (a mutation
observer in the page, on the same wall clock). Without ``bnviz.ui_first_paint`` the import starts
~0.7 s after the chart is sent, well before the browser has drawn it.
"""
import threading
import time
from pathlib import Path

import pytest

from conftest import start_server, wait_for_charts

pytestmark = pytest.mark.browser

# Wall-clock time (ms since the epoch) at which the first Plotly SVG entered the page.
_RECORD_FIRST_CHART = """
(() => {
  new MutationObserver((_, observer) => {
    if (document.querySelector('.js-plotly-plot .main-svg')) {
      window.__firstChartMs = performance.timeOrigin + performance.now();
      observer.disconnect();
    }
  }).observe(document, {childList: true, subtree: true});
})();
"""


def _watch_for_torch(pid: int, found: dict, stop: threading.Event) -> None:
    maps = Path(f"/proc/{pid}/maps")
    while not stop.is_set():
        try:
            if "libtorch" in maps.read_text():
                found["s"] = time.time()
                return
        except OSError:
            return
        time.sleep(0.01)


def test_first_chart_is_drawn_before_the_server_imports_torch(page):
    proc, url = start_server()
    found: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_for_torch, args=(proc.pid, found, stop), daemon=True)
    watcher.start()
    try:
        page.add_init_script(_RECORD_FIRST_CHART)
        page.goto(url)
        wait_for_charts(page, 1)
        # The browser's word ends the server's wait, and the page goes on to train as before.
        page.get_by_text("test accuracy, with batchnorm").wait_for()
        drawn_s = page.evaluate("window.__firstChartMs") / 1000
        assert "s" in found, "the server never loaded torch"
        assert drawn_s < found["s"], f"torch was loaded {drawn_s - found['s']:.2f} s before the first chart was drawn"
        # The server waits at most 6 s for the browser; it heard the browser well before that.
        assert found["s"] - drawn_s < 2.5
        assert page.locator(".js-plotly-plot").count() >= 2
    finally:
        stop.set()
        proc.terminate()
        proc.wait(10)
