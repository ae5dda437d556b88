"""Many users at once: 8 browser sessions train different configurations on one server.

Runs ``tools/load_test.py`` against its own `streamlit run app.py` on 127.0.0.1 (started with the
suite's ``start_server``, so its memory can be sampled from a known, fresh process) with the suite's
Chromium. Asserts that every session finishes and shows exactly its own configuration's results (test
accuracies equal to in-process training of that config), that the peak RSS of the server and its
training workers stays under 2 GB, that bnviz.ui limits torch to one thread,
and that all sessions show results within five minutes.

And one session over a long time: runs interrupted by a rerun leave partial histories in the session,
of which only the newest few are kept.
"""
import subprocess
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from bnviz import ui
from bnviz.config import Config
from conftest import start_server
from tools import load_test

ROOT = Path(__file__).resolve().parents[1]

SESSIONS = 8
STEPS = 100                # the fewest the steps control offers: the load is the 8 sessions, not run length
RESULTS_TIMEOUT_S = 240
MAX_TOTAL_S = 300


@pytest.fixture(scope="module")
def server():
    proc, url = start_server()
    yield proc, url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(MAX_TOTAL_S + 120)
def test_eight_sessions_at_once_each_see_their_own_results(server, browser, capsys):
    proc, url = server
    report = load_test.run(url, proc.pid, sessions=SESSIONS, steps=STEPS, timeout_s=RESULTS_TIMEOUT_S,
                           browser=browser)
    with capsys.disabled():
        print("\n[load]\n" + report.text())
    assert report.problems == []
    assert len(report.times_s) == SESSIONS and report.distinct_results == SESSIONS
    assert report.torch_threads == 1
    assert report.rss_peak_mb < load_test.MAX_RSS_MB
    assert report.wall_s < MAX_TOTAL_S


def test_a_long_session_keeps_only_the_newest_partial_histories():
    """Moving a control while a network trains reruns the page and cuts the run short; its partial
    history stays in the session (to show if the user pressed Stop). Forty of them are trimmed to the
    newest ``ui.PARTIALS_KEPT`` on the next run, instead of piling up until the session ends."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["steps"] = 100
    interrupted = [Config(seed=1000 + i) for i in range(40)]
    at.session_state["home.__partial"] = {cfg: f"partial history {i}" for i, cfg in enumerate(interrupted)}
    at.run()
    assert not at.exception
    assert list(at.session_state["home.__partial"]) == interrupted[-ui.PARTIALS_KEPT:]
