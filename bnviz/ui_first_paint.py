"""Let the browser draw a page's first charts while the server imports torch only on spare CPU.

Streamlit's browser side loads plotly.js (a 4.7 MB chunk) only when the first chart arrives, and
evaluating and drawing it takes the browser 2-3 s of CPU. Importing torch takes the server ~2 s
of CPU. On a two-core machine the two fight: with the import right after the chart was sent, the
chart came ~2 s later than with the import out of its way (``make bench``'s ``first_chart_s``;
benchmarks/README.md). Waiting for the browser before importing at all costs the other way: the
training results came ~0.5-1 s later than before. So a page that draws a torch-free chart first
(the home page) calls :func:`let_browser_draw`, which, once per server:

- starts torch's import in a thread at the lowest CPU priority (nice 19, Linux), after a short
  pause: the browser needs this process to serve it the plotly.js chunk first (~0.2 s), and a
  low-priority thread that holds the GIL would slow that down ~3x. Then the import takes only the
  CPU the browser leaves;
- waits until the browser says the charts are on screen, then returns, and the page imports
  torch (by then mostly or wholly imported) and trains.

The browser says so through a tiny inline component (Streamlit components v2: JavaScript in the
page, no iframe): it watches for the charts' SVG and then sets its state, which asks Streamlit for
a rerun. While the script waits it reads ``st.session_state`` now and then: that is one of
Streamlit's yield points, where a pending rerun stops the run, so the rerun starts at once and
finds the component's state set. Without a browser (``AppTest``), with torch already imported (any
later session), or when no word comes within ``timeout_s``, nothing waits longer.

No torch here, nor in anything this module imports: that is the point.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time

import streamlit as st

log = logging.getLogger("bnviz")

# Polls, not a MutationObserver: plotly adds hundreds of nodes while drawing, and a poll cannot run
# during the browser's long tasks anyway. setTimeout rather than requestAnimationFrame, which a
# background tab never fires.
_JS = """
export default function (component) {
  const { data, setStateValue, parentElement } = component;
  // Nothing to show: take no room in the page's layout, not even the gap between elements.
  const host = parentElement.host || parentElement;
  const box = host.closest && host.closest('[data-testid="stElementContainer"]');
  if (box) box.style.display = 'none';
  // A drawn chart has several .main-svg layers (three): count the charts, not the layers.
  const drawn = () => [...document.querySelectorAll('.js-plotly-plot')]
    .filter(chart => chart.querySelector('.main-svg')).length >= data.charts;
  const poll = () => drawn() ? setTimeout(() => setStateValue('drawn', true), 0) : setTimeout(poll, 50);
  poll();
}
"""

_first_paint = st.components.v2.component("bnviz.first_paint", js=_JS)

# Seconds between sending the first chart and starting torch's import: the browser fetches the
# plotly.js chunk from this process in ~0.2 s when nothing else runs here (0.6-0.8 s alongside
# the import).
FETCH_S = 0.5
LOWEST_PRIORITY = 19
_importer_lock = threading.Lock()
_importer: threading.Thread | None = None


def _import_torch_at_lowest_priority() -> None:
    time.sleep(FETCH_S)
    if sys.platform.startswith("linux"):
        # With PRIO_PROCESS and a thread's id, Linux sets that thread's nice value alone (setpriority(2)).
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
    try:
        importlib.import_module("torch")  # torch alone: its imports never wait on a module the page imports
    except Exception:  # noqa: BLE001 - the page's own import of torch will raise it where it is shown
        log.exception("importing torch in the background failed")


def _start_importing_torch() -> None:
    global _importer
    with _importer_lock:
        if _importer is None:
            _importer = threading.Thread(target=_import_torch_at_lowest_priority, name="bnviz-import-torch",
                                         daemon=True)
            _importer.start()


def let_browser_draw(charts: int, *, key: str, timeout_s: float = 6.0) -> None:
    """Return once the browser shows ``charts`` Plotly charts, if torch is still to be imported.

    Call it after the torch-free charts are sent and before the first import that brings torch.
    The run that waits is replaced by a rerun when the browser answers, so everything above the
    call is drawn again (identical, so the browser keeps what it shows).
    """
    if "torch" in sys.modules or not st.context.headers:
        return  # nothing heavy left to import, or no browser to wait for
    _start_importing_torch()
    state = _first_paint(key=key, data={"charts": charts}, default={"drawn": False},
                         on_drawn_change=lambda: None, height=0)
    if state.drawn:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.02)
        st.session_state.get(key)  # a yield point: the browser's rerun ends this run here
