"""The app in a real browser: time to the first chart, and redraw latency of a display control.

- ``first_chart_s``: from launching ``streamlit run app.py`` (loopback, free port, headless) to the
  first Plotly chart drawn (``.js-plotly-plot .main-svg`` visible) in headless Chromium, which is
  already running, as a user's browser would be. The home page's first chart is its picture of BN
  on one batch (no torch); torch is imported at the lowest priority while the browser draws it, and
  training waits until it is drawn (``bnviz.ui_first_paint``); then two networks train with a live
  chart: the time to that chart is in the detail (``first_training_chart_s``). Each repeat is a new
  server.
  The breakdown says where the wait goes: health check answered, title shown (the script's imports
  are done), the server's CPU seconds at each point, and ``python -X importtime`` of app.py's imports.
- ``redraw_ms``: on the "Activation histograms" page, once trained, the time from a display-only
  control change (its ``histograms.view.<name>`` widgets: a keyboard step on a slider, a click on
  an option) to the moment the plots' SVG differs from before, taken in the animation frame that
  paints it. Measured in the page with ``performance.now()`` on both ends: from the input event
  that makes the change (the key press, or the click's release) to that frame. Playwright's own
  work before the event (actionability checks, the press-to-release round trip) is reported apart
  (``playwright_call_to_input_ms``, and ``from_playwright_call_ms``: the latency counted from the
  Playwright call, as this benchmark measured until 2026-11-21). Every change is checked not to
  retrain. Websocket messages are timestamped too, splitting each redraw into the server's rerun
  (until the last message before the plots change) and the browser's rendering (from that message
  to the painted frame).
- ``momentum_change_ms``: on the same page, once trained, from a keyboard step on the BN momentum
  slider to the last painted change of the plots (the eval-mode accuracy redrawn for the new
  momentum, derived from the recorded batch statistics): median over several moves. Every move
  is checked not to retrain.
- ``live_first_histogram_s``: on the same page, from a change that retrains (a new seed typed in
  the sidebar) to the first layer histogram drawn in the training status, while the runs train.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from . import ROOT, Result, spread

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
HISTOGRAMS_PAGE = ROOT / "pages" / "1_Activation_histograms.py"
HISTOGRAMS_PATH = "/Activation_histograms"
VIEW_PREFIX = "histograms.view."
CHART = ".js-plotly-plot .main-svg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamlit run app.py`` on 127.0.0.1, as tests/conftest.py starts it, but not waited for."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
             "--server.port", str(self.port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 120) -> float:
        """Seconds since launch at which the health check first answered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"streamlit did not answer within {timeout} s")

    def cpu_s(self) -> float:
        """CPU seconds the server process has used so far: the load-independent part of a wait."""
        try:
            import psutil
            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system
        except Exception:  # noqa: BLE001 - a missing breakdown must not lose the timing
            return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait_idle(page, timeout_ms: int = 300_000) -> None:
    """Until the script run is over (Streamlit's own marker, which its e2e tests wait on)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached",
                           timeout=timeout_ms)


def _import_time() -> dict[str, Any]:
    """What a fresh interpreter spends importing what app.py imports (the first script run pays
    it): total seconds and the heaviest top-level packages, from ``python -X importtime``."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c",
                          "import streamlit, bnviz.ui, bnviz.figures, bnviz.views.home"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    total = 0.0
    heaviest: dict[str, float] = {}
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        seconds, name = int(parts[1]) / 1e6, parts[2].strip()
        if parts[2].startswith("  ") is False:            # a top-level import of the statement
            total += seconds
        if "." not in name or name.startswith("bnviz."):   # packages, and bnviz's own modules
            heaviest[name] = max(heaviest.get(name, 0.0), seconds)
    top = sorted(heaviest.items(), key=lambda kv: -kv[1])[:10]
    return {"total_s": round(total, 3), "cumulative_s": {k: round(v, 3) for k, v in top}}


def first_chart(browser, quick: bool, keep_server: bool = False) -> tuple[Result, Server | None]:
    repeats = 1 if quick else 5
    query = "?steps=100" if quick else ""
    chart, health, title, training_chart, trained = [], [], [], [], []
    cpu: dict[str, list[float]] = {"title": [], "first_chart": [], "first_training_chart": [], "trained": []}
    server = None
    for i in range(repeats):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        server = Server()
        try:
            health.append(server.wait_healthy())
            page.goto(server.url + "/" + query, wait_until="commit")
            # The title is the script's first element, sent once its imports are done.
            page.wait_for_selector("h1", timeout=300_000)
            title.append(time.perf_counter() - server.started)
            cpu["title"].append(server.cpu_s())
            page.wait_for_selector(CHART, timeout=300_000)
            chart.append(time.perf_counter() - server.started)
            cpu["first_chart"].append(server.cpu_s())
            # The first chart is the home page's picture of BN on one batch (numpy only, drawn
            # before torch is imported); the live training chart comes next, titled "Training ...".
            page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot .gtitle')]"
                                   ".some(t => t.textContent.startsWith('Training'))", timeout=300_000)
            training_chart.append(time.perf_counter() - server.started)
            cpu["first_training_chart"].append(server.cpu_s())
            page.get_by_text("test accuracy", exact=False).first.wait_for(timeout=300_000)
            trained.append(time.perf_counter() - server.started)
            cpu["trained"].append(server.cpu_s())
        except BaseException:
            server.stop()
            raise
        finally:
            context.close()
        if not (keep_server and i == repeats - 1):
            server.stop()
    result = Result(
        "first_chart_s", chart, "s",
        "launch of `streamlit run app.py` to the first Plotly chart drawn in headless Chromium (home page, "
        f"default settings{', steps=100' if quick else ''}; a new server per repeat)", target=6.0,
        detail={"server_cpu_s_at": {k: spread(v) for k, v in cpu.items()},
                "server_healthy_s": spread(health), "title_visible_s": spread(title),
                "first_training_chart_s": spread(training_chart), "trained_and_final_chart_s": spread(trained),
                "fresh_import": None if quick else _import_time()})
    return result, (server if keep_server else None)


# Timestamps every message the server sends, to split a redraw into the server's rerun and the
# browser's rendering: the last message before the plots change carries their new figure.
_JS_TAP_WEBSOCKET = """
(() => {
  const Original = window.WebSocket;
  window.__wsIn = [];
  window.WebSocket = class extends Original {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', () => window.__wsIn.push(performance.now()));
    }
  };
})();
"""

_JS_SETUP = """
() => {
  if (window.__redraw) return;
  const sig = () => Array.from(document.querySelectorAll('.js-plotly-plot .main-svg'))
                         .map(e => e.innerHTML).join('|');
  const inPlot = (n) => n && n.nodeType === 1 ? !!(n.closest('.js-plotly-plot') || n.querySelector('.js-plotly-plot'))
                                              : !!(n && n.parentElement && n.parentElement.closest('.js-plotly-plot'));
  const w = window.__redraw = {sig, s0: null, t0: null, tin: null, dom: null, frame: null, last: null, armed: false,
                               pending: null};
  // The change starts when the user's input that makes it reaches the page: the key press, or the
  // release of a click (a toggle, radio or option changes on it), seen in the capture phase before
  // any handler of the page; the last such event before the plots change counts. Playwright's own
  // work before it is not part of the redraw: its actionability checks (the element must stay
  // still for two animation frames) and the round trip between pressing and releasing the button.
  const input = () => { if (w.armed && w.dom === null) w.tin = performance.now(); };
  for (const type of ['keydown', 'pointerup', 'mouseup', 'click']) window.addEventListener(type, input, true);
  // Whether the plots differ is checked once per frame that follows plot mutations, in that
  // frame's animation callback (so just before it is painted), not on every batch of mutations:
  // serializing every plot's SVG is ~5 ms, and the page under test should not pay it each time.
  const check = () => {
    const now = performance.now();
    if (w.armed && w.frame === null && sig() !== w.s0) { w.dom = w.pending; w.frame = now; }
    w.pending = null;
  };
  new MutationObserver((records) => {
    if (!w.armed || w.tin === null) return;
    if (!records.some(r => inPlot(r.target) || [...r.addedNodes, ...r.removedNodes].some(inPlot))) return;
    const now = performance.now();
    w.last = now;
    if (w.frame === null && w.pending === null) {
      w.pending = now;
      requestAnimationFrame(check);
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}
"""


def _controls(page, settle_s: float = 1.0, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    """The page's display controls: (css selector, kind) from Streamlit's ``st-key-<key>`` classes.

    Streamlit 1.67 loads each widget's code on first use and shows a placeholder meanwhile, so a
    control can be on the page without its input yet: read until the list has not changed for
    ``settle_s`` (a run once found the three toggles missing and cycled through four controls).
    """
    found, since, deadline = _read_controls(page), time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() - since < settle_s and time.monotonic() < deadline:
        time.sleep(0.1)
        now = _read_controls(page)
        if now != found:
            found, since = now, time.monotonic()
    return found


def _read_controls(page) -> list[dict[str, Any]]:
    return page.evaluate("""(prefix) => {
      const out = [];
      for (const el of document.querySelectorAll(`[class*="st-key-${prefix}"]`)) {
        const cls = [...el.classList].find(c => c.startsWith(`st-key-${prefix}`));
        const kind = el.querySelector('input[type="range"], [role="slider"]') ? 'slider'
                   : el.querySelector('[role="combobox"]') ? 'select'
                   : el.querySelector('[role="radiogroup"]') ? 'radio'
                   : el.querySelector('input[type="checkbox"]') ? 'checkbox' : null;
        if (kind) out.push({cls, kind});
      }
      return out;
    }""", VIEW_PREFIX.replace(".", "-"))


def _open_listbox(page, root):
    """Open the selectbox in ``root`` and return the locator of its list of options.

    Streamlit 1.67's selectbox is a react-aria ComboBox: a text input (``role="combobox"``) and an
    "Open" button (``aria-haspopup="listbox"``). Neither opens the list every time: once other
    controls have been used (a keyboard step on the slider, a click on a toggle), a click on the
    input can merely focus it (which is what made the benchmark wait forever for an option), and a
    click on the button can do nothing. So try the button, the input, then the keyboard, until the
    combobox says it is expanded; the options are those of the listbox it controls (older Streamlit:
    baseweb's div combobox, its options in a popover, found as the last listbox on the page).
    """
    combo = root.locator('[role="combobox"]').first
    button = root.locator('button[aria-haspopup="listbox"]')
    expanded = "e => e.getAttribute('aria-expanded') === 'true'"
    openers = [lambda: button.first.click(), lambda: combo.click(), lambda: combo.press("ArrowDown"),
               lambda: combo.press("Alt+ArrowDown")]
    for opener in openers:
        if combo.evaluate(expanded):
            break
        if opener is openers[0] and not button.count():
            continue
        opener()
        try:
            page.wait_for_function(f"e => ({expanded})(e)", arg=combo.element_handle(), timeout=5_000)
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try the next way of opening it
            continue
        break
    else:
        raise RuntimeError(f"the selectbox {root} did not open (aria-expanded stayed false)")
    listbox_id = combo.get_attribute("aria-controls")
    listbox = page.locator(f'[id="{listbox_id}"]') if listbox_id else page.locator('[role="listbox"]').last
    listbox.locator('[role="option"]').first.wait_for(timeout=10_000)
    return listbox


def _prepare_and_act(page, control: dict[str, Any], state: dict[str, Any]):
    """Bring ``control`` to the point where one user action changes it; return that action."""
    root = page.locator(f".{control['cls']}")
    kind = control["kind"]
    if kind == "slider":
        thumb = root.locator('input[type="range"], [role="slider"]').first
        now, lo, hi = (float(v) for v in thumb.evaluate(
            "e => e.type === 'range' ? [e.value, e.min, e.max]"
            " : [e.getAttribute('aria-valuenow'), e.getAttribute('aria-valuemin'), e.getAttribute('aria-valuemax')]"))
        direction = state.setdefault(control["cls"], "ArrowLeft" if now >= hi else "ArrowRight")
        if (direction == "ArrowRight" and now >= hi) or (direction == "ArrowLeft" and now <= lo):
            direction = state[control["cls"]] = "ArrowLeft" if direction == "ArrowRight" else "ArrowRight"
        thumb.focus()
        return lambda: page.keyboard.press(direction)
    if kind == "select":
        options = _open_listbox(page, root)
        target = options.locator('[role="option"][aria-selected="false"]')
        index = state.setdefault(control["cls"], 0) % target.count()
        state[control["cls"]] += 1
        return target.nth(index).click
    if kind == "radio":
        unchecked = root.locator('label:has(input[type="radio"]:not(:checked))').first
        return unchecked.click
    return root.locator("label").first.click


def _trained_histograms(browser, server: Server, query: str, init_script: str | None = None):
    """A new browser context on the histograms page (``query`` appended), once its runs are
    trained and drawn and the script run is over: (context, page); close the context after."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    if init_script is not None:
        context.add_init_script(init_script)
    page = context.new_page()
    page.set_default_timeout(300_000)
    page.goto(server.url + HISTOGRAMS_PATH + query)
    page.wait_for_selector(CHART)
    _wait_idle(page)
    return context, page


def redraw(browser, quick: bool, server: Server) -> Result | None:
    if not HISTOGRAMS_PAGE.exists():
        return None
    changes = 2 if quick else 15
    context, page = _trained_histograms(browser, server, "?steps=100" if quick else "", _JS_TAP_WEBSOCKET)
    try:
        controls = _controls(page)
        if not controls:
            raise RuntimeError(f"no display controls keyed {VIEW_PREFIX}* on {HISTOGRAMS_PATH}")
        page.evaluate(_JS_SETUP)
        latencies: dict[str, list[float]] = {c["cls"]: [] for c in controls}
        dom: list[float] = []
        settled: list[float] = []
        server_part: list[float] = []
        browser_part: list[float] = []
        harness: list[float] = []
        samples_in_order: list[float] = []
        state: dict[str, Any] = {}
        for i in range(changes + 1):                      # the first change is a warm-up
            control = controls[i % len(controls)]
            page.wait_for_timeout(300)
            act = _prepare_and_act(page, control, state)
            page.evaluate("() => { const w = window.__redraw; w.s0 = w.sig(); w.dom = w.frame = w.last = w.tin = null;"
                          " w.pending = null; w.armed = true; w.t0 = performance.now(); }")
            act()
            page.wait_for_function("() => window.__redraw.frame !== null", timeout=60_000)
            _wait_idle(page)
            page.wait_for_timeout(300)                    # let trailing redraws land before reading `last`
            w = page.evaluate("""() => { const w = window.__redraw; w.armed = false;
                const before = window.__wsIn.filter(t => t > w.tin && t <= w.dom);
                const delta = before.length ? Math.max(...before) : w.tin;
                return {frame: w.frame - w.tin, dom: w.dom - w.tin, last: w.last - w.tin, harness: w.tin - w.t0,
                        server: delta - w.tin, browser: w.frame - delta}; }""")
            if page.get_by_text("network(s)…").count():
                raise RuntimeError("a display-only change started training")
            if i > 0:
                latencies[control["cls"]].append(w["frame"])
                samples_in_order.append(w["frame"])
                dom.append(w["dom"])
                settled.append(w["last"])
                server_part.append(w["server"])
                browser_part.append(w["browser"])
                harness.append(w["harness"])
    finally:
        context.close()
    samples = [v for vs in latencies.values() for v in vs]
    per_control = {cls.removeprefix("st-key-"): spread(v, digits=1) for cls, v in latencies.items() if v}
    kinds = {c["cls"].removeprefix("st-key-"): c["kind"] for c in controls}
    return Result("redraw_ms", samples, "ms",
                  f"display-only change on {HISTOGRAMS_PATH} (cycling its {VIEW_PREFIX}* controls) to the "
                  f"first painted frame with changed plots, no retraining; median of {len(samples)} changes",
                  target=150.0,
                  detail={"per_control_ms": per_control, "control_kinds": kinds,
                          "dom_changed_ms": spread(dom, digits=1), "settled_ms": spread(settled, digits=1),
                          "until_last_message_before_change_ms": spread(server_part, digits=1),
                          "message_to_painted_change_ms": spread(browser_part, digits=1),
                          "playwright_call_to_input_ms": spread(harness, digits=1),
                          "from_playwright_call_ms": spread([a + b for a, b in zip(samples_in_order, harness)],
                                                            digits=1)})


MOMENTUM_SLIDER = "st-key-histograms-momentum"


_JS_PAGE_CHANGES = """() => {
  if (window.__page) return;
  const w = window.__page = {armed: false, tin: null, last: null};
  window.addEventListener('keydown', () => { if (w.armed && w.tin === null) w.tin = performance.now(); }, true);
  new MutationObserver(() => { if (w.armed && w.tin !== null) w.last = performance.now(); })
    .observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def momentum_change(browser, quick: bool, server: Server) -> Result:
    """From the key press that moves the slider to the page's last change (any element: the slider,
    the charts, Streamlit's running indicator), once nothing has changed for a second."""
    moves = 2 if quick else 8
    context, page = _trained_histograms(browser, server, "?steps=100" if quick else "")
    try:
        page.evaluate(_JS_PAGE_CHANGES)
        control, state = {"cls": MOMENTUM_SLIDER, "kind": "slider"}, {}
        settled: list[float] = []
        for i in range(moves + 1):                          # the first move is a warm-up
            page.wait_for_timeout(500)
            act = _prepare_and_act(page, control, state)
            page.evaluate("() => { const w = window.__page; w.tin = w.last = null; w.armed = true; }")
            act()
            page.wait_for_timeout(300)
            _wait_idle(page)
            page.wait_for_function("() => window.__page.last !== null && performance.now() - window.__page.last > 1000",
                                   timeout=120_000, polling=100)
            last = page.evaluate("() => { const w = window.__page; w.armed = false; return w.last - w.tin; }")
            if page.get_by_text("network(s)…").count():
                raise RuntimeError("a momentum change started training")
            if i > 0:
                settled.append(last)
    finally:
        context.close()
    return Result("momentum_change_ms", settled, "ms",
                  f"key press on the BN momentum slider of {HISTOGRAMS_PATH} to the page's last change (no "
                  f"retraining, checked); median of {len(settled)} moves",
                  target=250.0)


_JS_FIRST_LIVE_HISTOGRAM = """() => [...document.querySelectorAll('[data-testid="stExpander"] .js-plotly-plot .gtitle')]
    .some(t => t.textContent.includes('per layer at step'))"""


def live_first_histogram(browser, quick: bool, server: Server) -> Result:
    repeats = 1 if quick else 3
    # 1,000 steps in quick mode too: a shorter run can end before its first live chart is due
    context, page = _trained_histograms(browser, server, "?steps=1000")
    took: list[float] = []
    try:
        seed = page.locator(".st-key-seed input").first
        for i in range(repeats):
            seed.fill(str(100 + i))
            start = time.perf_counter()
            seed.press("Enter")
            page.wait_for_function(_JS_FIRST_LIVE_HISTOGRAM, timeout=300_000, polling=20)
            took.append(time.perf_counter() - start)
            _wait_idle(page)
    finally:
        context.close()
    return Result("live_first_histogram_s", took, "s",
                  f"new seed typed on {HISTOGRAMS_PATH} (both networks retrain) to the first layer histogram drawn "
                  f"while they train; median of {len(took)}", target=1.5)


class PartialFailure(RuntimeError):
    """A part of the group failed; ``results`` holds what the other parts measured, which
    ``python -m benchmarks`` keeps while it reports the failure (the traceback is the cause's)."""

    def __init__(self, message: str, results: list[Result]):
        super().__init__(message)
        self.results = results


def run(quick: bool) -> list[Result]:
    from playwright.sync_api import sync_playwright
    if not Path(CHROMIUM).exists():
        raise RuntimeError("Chromium is missing: apt-get install -y chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            result, server = first_chart(browser, quick, keep_server=quick)
            results = [result]
            if server is None:
                server = Server()
                server.wait_healthy()
            try:
                for measure in (redraw, momentum_change, live_first_histogram):
                    try:
                        r = measure(browser, quick, server)
                    except Exception as exc:  # noqa: BLE001 - report it, but keep what was measured
                        raise PartialFailure(f"{measure.__name__} failed ({type(exc).__name__}); "
                                             f"{', '.join(r.key for r in results)} measured", results) from exc
                    if r is not None:
                        results.append(r)
            finally:
                server.stop()
        finally:
            browser.close()
    return results
