"""Many users at once: 8 browser sessions train different configurations on one server.

Runs ``tools/load_test.py`` against its own `streamlit run app.py` on 127.0.0.1 (started with the
suite's ``start_server``, so its memory can be sampled from a known, fresh process) with the suite's
Chromium. Asserts that every session finishes and shows exactly its own configuration's results (test
accuracies equal to in-process training of that config), that the server's peak RSS stays under 3 GB,
that bnviz.ui limits torch to one thread, and that the whole test takes under five minutes.
"""
import subprocess

import pytest

from conftest import start_server
from tools import load_test

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SESSIONS = 8
STEPS = 200
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
