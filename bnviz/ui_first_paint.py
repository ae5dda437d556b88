"""Let the browser draw a page's first charts before the server imports torch.

Streamlit's browser side loads plotly.js (a 4.7 MB chunk) only when the first chart arrives, and
evaluating and drawing it takes the browser 2-3 s of CPU. Importing torch takes the server ~2 s
of CPU. On a two-core machine the two fight, and the first chart came ~1.5 s later than with the
import out of its way (``make bench``'s ``first_chart_s``; benchmarks/README.md). So a page that
draws a torch-free chart first (the home page) waits here, once per server, until the browser
says the chart is on screen, and then imports torch.

The browser says so through a tiny inline component (Streamlit components v2: JavaScript in the
page, no iframe): it watches for the charts' SVG and then sets its state, which asks Streamlit for
a rerun. While the script waits it reads ``st.session_state`` now and then: that is one of
Streamlit's yield points, where a pending rerun stops the run, so the rerun starts at once and
finds the component's state set. Without a browser (``AppTest``), with torch already imported (any
later session), or when no word comes within ``timeout_s``, nothing waits longer.

No torch here, nor in anything this module imports: that is the point.
"""
from __future__ import annotations

import sys
import time

import streamlit as st

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
  const drawn = () => document.querySelectorAll('.js-plotly-plot .main-svg').length >= data.charts;
  const poll = () => drawn() ? setTimeout(() => setStateValue('drawn', true), 0) : setTimeout(poll, 50);
  poll();
}
"""

_first_paint = st.components.v2.component("bnviz.first_paint", js=_JS)


def let_browser_draw(charts: int, *, key: str, timeout_s: float = 6.0) -> None:
    """Return once the browser shows ``charts`` Plotly charts, if torch is still to be imported.

    Call it after the torch-free charts are sent and before the first import that brings torch.
    The run that waits is replaced by a rerun when the browser answers, so everything above the
    call is drawn again (identical, so the browser keeps what it shows).
    """
    if "torch" in sys.modules or not st.context.headers:
        return  # nothing heavy left to import, or no browser to wait for
    state = _first_paint(key=key, data={"charts": charts}, default={"drawn": False},
                         on_drawn_change=lambda: None, height=0)
    if state.drawn:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.02)
        st.session_state.get(key)  # a yield point: the browser's rerun ends this run here
