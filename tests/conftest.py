import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# One thread: the suite's numbers do not depend on how many cores the machine has, and the
# browser tests' Streamlit server is not starved by the test process.
torch.set_num_threads(1)
os.environ.setdefault("BNVIZ_DATA_DIR", str(ROOT / "tests" / "artifacts" / "no-mnist-here"))


def _keep_the_page_across_fragment_reruns() -> None:
    """Make AppTest show what the browser shows after a fragment rerun: the whole page.

    A display control reruns only the parts of a page drawn with it (``ui.Page.part``: keyed
    ``st.fragment``s rerun by the control's callback). The browser keeps the rest of the page;
    AppTest (Streamlit 1.67) builds its element tree from the messages of the last run only, so
    after such a rerun it would show the rerun parts and nothing else. Here the last full page is
    kept per session, and a fragment rerun's elements replace those of the fragments it reran.
    """
    from streamlit.runtime.scriptrunner import ScriptRunnerEvent
    from streamlit.testing.v1.local_script_runner import LocalScriptRunner

    if getattr(LocalScriptRunner, "_bnviz_keeps_page", False):
        return
    run_messages = LocalScriptRunner.forward_msgs

    def forward_msgs(self):
        msgs = run_messages(self)
        started = [data.get("fragment_ids_this_run") for event, data in zip(self.events, self.event_data)
                   if event == ScriptRunnerEvent.SCRIPT_STARTED]
        rerun = started[-1] if started else None
        page = getattr(self.session_state, "_bnviz_page_messages", None)
        if rerun and page is not None:
            kept = {tuple(m.metadata.delta_path): m for m in page
                    if m.HasField("delta") and m.delta.fragment_id not in rerun}
            kept.update((tuple(m.metadata.delta_path), m) for m in msgs if m.HasField("delta"))
            msgs = [m for m in msgs if not m.HasField("delta")] + [kept[path] for path in sorted(kept)]
        self.session_state._bnviz_page_messages = msgs
        return msgs

    LocalScriptRunner.forward_msgs = forward_msgs
    LocalScriptRunner._bnviz_keeps_page = True


_keep_the_page_across_fragment_reruns()


@pytest.fixture
def tiny_config():
    """A config that trains in well under a second."""
    from bnviz.config import Config
    return Config(steps=60, width=32, depth=2, record_every=10, eval_every=20)


# ----- real-browser fixtures: `streamlit run app.py` on loopback, driven by Debian's Chromium -----
import socket
import subprocess
import time
import urllib.request

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
ARTIFACTS = ROOT / "tests" / "artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int | None = None, extra_env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start `streamlit run app.py` on 127.0.0.1 and wait until it answers its health check."""
    port = port or _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(extra_env or {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("streamlit did not start within 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def app_url():
    proc, url = start_server()
    yield url
    stop_server(proc)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs it (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(120_000)
    yield pg
    context.close()


def wait_for_charts(pg, count: int = 1, timeout_ms: int = 120_000) -> None:
    """Wait until at least ``count`` Plotly charts have drawn their SVG."""
    pg.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {count}",
                         timeout=timeout_ms)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; asserts the PNG signature."""
    import struct
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])
