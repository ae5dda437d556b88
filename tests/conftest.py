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


@pytest.fixture(scope="session")
def app_url():
    proc, url = start_server()
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


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
