"""A fresh server imports torch at the lowest CPU priority while the browser draws the home page's
first chart, and goes on to train as soon as the browser says the chart is drawn.

The oracles are the operating system and the page: the server's threads and their nice values
(polled from /proc) at the moment torch's shared library appears in its memory map, and the
moments the browser drew the first chart and the training chart (observers in the page).
"""
import threading
import time
from pathlib import Path

import pytest

from conftest import start_server, wait_for_charts

pytestmark = pytest.mark.browser

# Wall-clock times (ms since the epoch) at which the first Plotly SVG, and the training chart's
# title, entered the page.
_RECORD_CHARTS = """
(() => {
  new MutationObserver((_, observer) => {
    const now = performance.timeOrigin + performance.now();
    if (!window.__firstChartMs && document.querySelector('.js-plotly-plot .main-svg')) window.__firstChartMs = now;
    if ([...document.querySelectorAll('.js-plotly-plot .gtitle')].some(t => t.textContent.startsWith('Training'))) {
      window.__trainingChartMs = now;
      observer.disconnect();
    }
  }).observe(document, {childList: true, subtree: true});
})();
"""


def _nice_values(pid: int) -> list[int]:
    values = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that just ended
        values.append(int(fields[16]))  # field 19 of stat(5); fields[0] is field 3
    return values


def _watch_for_torch(pid: int, found: dict, stop: threading.Event) -> None:
    maps = Path(f"/proc/{pid}/maps")
    while not stop.is_set():
        try:
            nice = _nice_values(pid)
            if "libtorch" in maps.read_text():
                found.update(s=time.time(), nice=nice)
                return
        except OSError:
            return
        time.sleep(0.005)


def test_torch_is_imported_at_lowest_priority_while_the_first_chart_is_drawn(page):
    proc, url = start_server()
    found: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_for_torch, args=(proc.pid, found, stop), daemon=True)
    watcher.start()
    try:
        page.add_init_script(_RECORD_CHARTS)
        page.goto(url)
        wait_for_charts(page, 1)
        page.get_by_text("test accuracy, with batchnorm").wait_for()
        drawn_s = page.evaluate("window.__firstChartMs") / 1000
        training_s = page.evaluate("window.__trainingChartMs") / 1000
        assert "s" in found, "the server never loaded torch"
        # The thread that loads torch runs at nice 19; the server's other threads at 0.
        assert 19 in found["nice"] and 0 in found["nice"], found["nice"]
        # The browser's word ends the server's wait: the page trains at once. Without it the
        # server would wait 6 s from sending the chart, ~3.5 s or more after the browser drew it.
        # Training runs in worker processes (bnviz.executor) that a new server starts when bnviz.ui
        # is imported, after this chart: their forkserver imports torch first (~2 s of CPU), so the
        # first training chart comes 3.8-4.8 s after it (measured 2026-12-05 at load 5), where the
        # in-process training of before took under 3 s. Waiting for the 6 s would add those 6 s.
        assert 0 < training_s - drawn_s < 6.0
        assert page.locator(".js-plotly-plot").count() >= 2
    finally:
        stop.set()
        proc.terminate()
        proc.wait(10)
