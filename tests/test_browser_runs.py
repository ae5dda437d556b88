"""The "Your runs" page in a real browser, following a run that another process is training:
new steps appear within seconds, polling stops when the run ends, nothing errs, and a chart
downloads as a PNG."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT, png_size, start_server, stop_server, wait_for_charts

pytestmark = pytest.mark.browser

SCREENSHOT = ROOT / "tests" / "artifacts" / "runs.png"   # docs/screenshots/runs.png is a copy of one
STEPS, EVERY, PAUSE_S = 200, 5, 0.1     # some 20-30 s of training

# A user's script: a small CNN with a BatchNorm1d given Keras' momentum by mistake (the doctor
# warns about it), trained under bnviz.watch with a held-out set.
TRAIN = textwrap.dedent(f"""
    import sys, time
    import torch
    from torch import nn
    import bnviz

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 24, 3, stride=2), nn.BatchNorm2d(24), nn.ReLU(), nn.Flatten(),
                          nn.Linear(24 * 3 * 3, 32), nn.BatchNorm1d(32, momentum=0.9), nn.ReLU(), nn.Linear(32, 4))
    g = torch.Generator().manual_seed(1)
    prototypes = torch.randn(4, 1, 8, 8, generator=g)

    def batch(n):
        y = torch.randint(0, 4, (n,), generator=g)
        return prototypes[y] + 3.0 * torch.randn(n, 1, 8, 8, generator=g), y

    holdout = batch(128)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with bnviz.watch(model, sys.argv[1], every={EVERY}, holdout=holdout) as w:
        for step in range({STEPS}):
            x, y = batch(32)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.step(loss=loss.item())
            time.sleep({PAUSE_S})
""")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def runs_url(runs_dir):
    """The app with its runs folder set, as `bnviz app --runs DIR` starts it."""
    proc, url = start_server(extra_env={"BNVIZ_RUNS_DIR": str(runs_dir)})
    yield url
    stop_server(proc)


@pytest.fixture
def train(runs_dir, tmp_path):
    """Starts a training process writing the run ``name``; returns once its first step is committed."""
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    procs = []

    def start(name: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(script), str(runs_dir / name)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        deadline = time.monotonic() + 120
        while not (runs_dir / name / "bnviz-run.sqlite").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the training process wrote no run within 120 s"
            time.sleep(0.2)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']").filter(has=page.get_by_text(label, exact=True))
    return box.locator("[data-testid='stMetricValue']").inner_text(timeout=60_000)


def test_a_training_run_is_followed_live_and_its_charts_download(page, runs_url, train):
    training = train("live")
    page.add_init_script("""(() => { const Original = window.WebSocket; window.__received = 0;
        window.WebSocket = class extends Original { constructor(...a) { super(...a);
            this.addEventListener('message', () => { window.__received += 1; }); } }; })();""")
    page.goto(runs_url + "/Your_runs?run=live")
    page.get_by_text("Following live", exact=False).wait_for(timeout=120_000)
    assert metric(page, "status") == "running"

    # live: the last step shown grows while the run trains, without any action in the browser
    first = int(metric(page, "last step"))
    seen = [first]
    deadline = time.monotonic() + 20
    while seen[-1] <= first and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        seen.append(int(metric(page, "last step")))
    assert seen[-1] > first, f"the last step shown stayed at {first} for 20 s while the run trained"
    grown_after_s = 20 - (deadline - time.monotonic())
    assert grown_after_s < 10, grown_after_s

    # the end of the run reaches the page, and the page stops asking for news
    assert training.wait(240) == 0, training.stderr.read()
    deadline = time.monotonic() + 30
    while metric(page, "status") != "finished":
        assert time.monotonic() < deadline, "the page did not show the run finished within 30 s"
        page.wait_for_timeout(500)
    assert metric(page, "last step") == str(STEPS - 1)
    assert page.get_by_text("Following live", exact=False).count() == 0
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached")
    page.wait_for_timeout(1500)
    before = page.evaluate("window.__received")
    page.wait_for_timeout(4000)
    assert page.evaluate("window.__received") == before, "the page still polls a finished run"

    wait_for_charts(page, 6)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stAlertContentError']").count() == 0
    page.get_by_role("heading", name="BN doctor").wait_for()
    warning = page.locator("[data-testid='stAlertContentWarning']").first.inner_text()
    assert "momentum in the other framework's convention" in warning and "momentum=0.9" in warning
    assert re.search(r"Evidence: momentum in the other framework's convention", page.content())

    # the whole page, as a user sees it at 1400 px
    height = page.evaluate("Math.max(...[...document.querySelectorAll("
                           "'[data-testid=stMain], [data-testid=stMainBlockContainer]')].map(e => e.scrollHeight))")
    page.set_viewport_size({"width": 1400, "height": height + 40})
    page.wait_for_timeout(2000)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    with page.expect_download(timeout=180_000) as download:
        page.get_by_role("button", name="Download PNG").first.click()
    assert download.value.suggested_filename == "logged-scalars.png"
    data = open(download.value.path(), "rb").read()
    width, height = png_size(data)
    assert width >= 800 and height >= 300 and len(data) > 10_000, (width, height, len(data))


def test_the_display_settings_of_a_link_survive_a_busy_browser_following_a_run(page, runs_url, train):
    """A browser still drawing the page can send, and show, a control's default instead of the value
    the page gave it, with the checks for news it sends every second (Streamlit 1.67; reproduced with
    the CPU throttled). The page puts the link's values back, and the browser shows them."""
    training = train("busy")
    page.context.new_cdp_session(page).send("Emulation.setCPUThrottlingRate", {"rate": 8})
    page.goto(runs_url + "/Your_runs?run=busy&layer=4&tap=post_activation&log_y=True")
    assert training.wait(240) == 0, training.stderr.read()
    page.context.new_cdp_session(page).send("Emulation.setCPUThrottlingRate", {"rate": 1})
    deadline = time.monotonic() + 120
    while metric(page, "status") != "finished":
        assert time.monotonic() < deadline, "the page did not show the run finished within 120 s"
        page.wait_for_timeout(500)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached")
    page.wait_for_timeout(2000)
    for setting in ("layer=4", "tap=post_activation", "log_y=True"):
        assert setting in page.url, page.url
    shown = page.evaluate("""() => ({
        tap: [...document.querySelectorAll('input[type=radio]')].filter(e => e.checked)
             .map(e => e.closest('label').innerText),
        toggles: Object.fromEntries([...document.querySelectorAll('input[type=checkbox]')]
             .map(e => [e.closest('label').innerText, e.checked])),
        layer: document.querySelector('input[aria-label=Layer]').value})""")
    assert shown["tap"] == ["post-activation (output of the nonlinearity)"], shown
    assert {k: v for k, v in shown["toggles"].items() if k != "Presentation"} == {"Log y axis": True, "Log colour scale": True}, shown
    assert shown["layer"] == "4 (BatchNorm2d)", shown
    page.wait_for_function("[...document.querySelectorAll('.js-plotly-plot .gtitle')].some(t => t.textContent === "
                           "'Post-activation of 4 (BatchNorm2d) over training')")
