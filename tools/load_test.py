"""Load test: several browser sessions train at once on one `streamlit run app.py` server.

Opens ``--sessions`` Chromium contexts (8 by default, at most 32) on the home page of one server on 127.0.0.1, each
with its own link (seed, activation, normalization, a small number of steps), all at once, and waits
until every session shows its results. Then it checks that each session shows exactly its own
configuration's results: the metric labels name its normalization, the controls show its settings,
the URL keeps them, and each test accuracy equals what ``bnviz.train.train`` gives for that config in
this process (an independent oracle: training is deterministic). Meanwhile it samples the server's
resident memory (the server's and its training workers'), and counts the sessions that were shown their
place in the training queue (a server trains at most one run per core at a time). Everything is bounded: the number of sessions, one deadline for the whole test, and
every wait in the polling loop.

    .venv/bin/python tools/load_test.py [--sessions 8] [--steps 200] [--timeout 240]

prints a report and exits 1 if any check failed. ``tests/test_load.py`` runs the same function.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

ACTIVATIONS = ("relu", "tanh", "sigmoid")
NORMS = ("batchnorm", "layernorm", "reference", "groupnorm")
MAX_SESSIONS = 32
MAX_RSS_MB = 2048   # the server and its training workers together
POLL_S = 1.0

# What a session's page shows, read in one evaluation (Streamlit's data-testid attributes).
READ_PAGE = """() => {
  const text = (sel) => Array.from(document.querySelectorAll(sel)).map(e => e.innerText.trim());
  const selectbox = (label) => {
    const input = document.querySelector(`[data-testid="stSelectbox"] input[aria-label="${label}"]`);
    return input ? input.value : null;
  };
  return {
    title: document.querySelector('h1') !== null,
    labels: text('[data-testid="stMetricLabel"]'),
    values: text('[data-testid="stMetricValue"]'),
    charts: document.querySelectorAll('.js-plotly-plot .main-svg').length,
    errors: text('[data-testid="stAlertContentError"]').concat(text('[data-testid="stException"]')),
    queued: text('[data-testid="stAlertContentInfo"]').filter(t => t.includes('Waiting for a free training slot')),
    activation: selectbox('Activation'),
    norm: selectbox('Normalization'),
    url: location.href,
  };
}"""


def session_params(sessions: int, steps: int) -> list[dict[str, str]]:
    """One link per session: every session has its own seed, and its own (activation, norm) pair."""
    return [{"seed": str(k + 1), "steps": str(steps), "activation": ACTIVATIONS[k % len(ACTIVATIONS)],
             "norm": NORMS[k % len(NORMS)]} for k in range(sessions)]


def expected_metrics(params: dict[str, str]) -> dict[str, str]:
    """{metric label: value} the home page must show for ``params``, from training in this process."""
    from bnviz.config import from_query
    from bnviz.train import train
    from bnviz.views import home

    config, notes = from_query(params, home.VIEW.default)
    assert not notes, notes
    return {f"test accuracy, {label}": f"{train(cfg).history.evals[-1].test_acc:.1%}"
            for label, cfg in home.runs(config).items()}


CHECK_THREADS = """
import threading
import bnviz.ui, torch
seen = [torch.get_num_threads()]
# Streamlit runs each session's script in a thread of its own: the limit must hold there too.
worker = threading.Thread(target=lambda: (torch.ones(256, 256) @ torch.ones(256, 256), seen.append(torch.get_num_threads())))
worker.start()
worker.join()
print(max(seen))
"""


def server_torch_threads() -> int:
    """torch's intra-op threads once bnviz.ui is imported (in the main thread and in a new thread), in a
    fresh interpreter like the server's, without OMP_NUM_THREADS in its environment."""
    out = subprocess.run([sys.executable, "-c", CHECK_THREADS],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(Path.home())})
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else -1


class RssSampler(threading.Thread):
    """Samples the resident memory of a process and its children until stopped."""

    def __init__(self, pid: int, every_s: float = 0.25):
        super().__init__(daemon=True)
        self.process, self.every_s = psutil.Process(pid), every_s
        self.samples: list[int] = []
        self._halt = threading.Event()

    def rss(self) -> int:
        procs = [self.process, *self.process.children(recursive=True)]
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append(self.rss())
            except psutil.Error:
                return
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def _spread(times: list[float]) -> str:
    if not times:
        return "-"
    return f"min {min(times):.1f} s, median {statistics.median(times):.1f} s, max {max(times):.1f} s"


@dataclass
class Report:
    sessions: int
    runs: int
    steps: int
    wall_s: float = 0.0
    times_s: list[float] = field(default_factory=list)         # link opened -> results shown
    first_s: list[float] = field(default_factory=list)         # link opened -> page title shown
    server_cpu_s: float = 0.0
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_end_mb: float = 0.0
    torch_threads: int = 0
    distinct_results: int = 0
    saw_queue: int = 0                                          # sessions shown their place in the queue
    problems: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [
            f"sessions at once        {self.sessions} (one server, 127.0.0.1)",
            f"runs trained            {self.runs} x {self.steps} steps",
            f"time to page title      {_spread(self.first_s)}",
            f"time to results         {_spread(self.times_s)}",
            f"wall time               {self.wall_s:.1f} s",
            f"server RSS              start {self.rss_start_mb:.0f} MB, peak {self.rss_peak_mb:.0f} MB, "
            f"end {self.rss_end_mb:.0f} MB",
            f"server CPU time         {self.server_cpu_s:.1f} s",
            f"torch threads (ui)      {self.torch_threads}",
            f"distinct results        {self.distinct_results} of {self.sessions} sessions",
            f"shown a queue place     {self.saw_queue} of {self.sessions} sessions (while others trained)",
            f"problems                {len(self.problems)}",
        ]
        return "\n".join(lines + [f"  - {p}" for p in self.problems])


def run(url: str, server_pid: int, *, sessions: int = 8, steps: int = 200, timeout_s: float = 240,
        browser=None) -> Report:
    """Drive ``sessions`` browser sessions against the server at ``url`` (loopback only)."""
    if urllib.parse.urlsplit(url).hostname != "127.0.0.1":
        raise ValueError(f"the load test only drives a server on 127.0.0.1, not {url}")
    if not 1 <= sessions <= MAX_SESSIONS:
        raise ValueError(f"sessions must be 1..{MAX_SESSIONS}")
    params = session_params(sessions, steps)
    report = Report(sessions=sessions, runs=2 * sessions, steps=steps)
    report.torch_threads = server_torch_threads()
    if report.torch_threads != 1:
        report.problems.append(f"importing bnviz.ui leaves torch with {report.torch_threads} threads, not 1")

    sampler = RssSampler(server_pid)
    report.rss_start_mb = sampler.rss() / 2**20
    cpu_before = sum(sampler.process.cpu_times()[:2])
    sampler.start()
    seen = _drive(url, params, timeout_s, browser, report)
    sampler.stop()
    report.server_cpu_s = sum(sampler.process.cpu_times()[:2]) - cpu_before
    report.rss_peak_mb = max(sampler.samples, default=0) / 2**20
    report.rss_end_mb = sampler.rss() / 2**20
    if report.rss_peak_mb > MAX_RSS_MB:
        report.problems.append(f"server RSS peaked at {report.rss_peak_mb:.0f} MB (bound {MAX_RSS_MB} MB)")

    # The oracle runs after the browsers are done, so it does not compete with the server for CPU.
    results = set()
    for k, (p, page) in enumerate(zip(params, seen)):
        if page is None:
            continue
        want = expected_metrics(p)
        got = dict(zip(page["labels"], page["values"]))
        results.add(tuple(sorted(got.items())))
        if got != want:
            report.problems.append(f"session {k} ({p}): shows {got}, its own config gives {want}")
        if (page["activation"], page["norm"]) != (p["activation"], p["norm"]):
            report.problems.append(f"session {k} ({p}): controls show activation={page['activation']!r}, "
                                   f"norm={page['norm']!r}")
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page["url"]).query))
        defaults = {"seed": "0", "steps": "1000", "activation": "relu", "norm": "batchnorm"}
        for key, value in p.items():
            if query.get(key, defaults[key]) != value:
                report.problems.append(f"session {k}: URL {page['url']} lost {key}={value}")
    report.distinct_results = len(results)
    if sessions > 1 and len(results) < 2:
        report.problems.append("every session shows the same results: they are not their own")
    return report


def _drive(url: str, params: list[dict[str, str]], timeout_s: float, browser, report: Report) -> list[dict | None]:
    """Open every session at once and poll them until each shows its results or the deadline passes."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    from conftest import CHROMIUM, CHROMIUM_ARGS

    seen: list[dict | None] = [None] * len(params)
    manager = None
    if browser is None:
        manager = sync_playwright().start()
        browser = manager.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    contexts = []
    try:
        started = time.monotonic()
        deadline = started + timeout_s
        pages = []
        for p in params:
            context = browser.new_context(viewport={"width": 1200, "height": 900})
            contexts.append(context)
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{url}/?{urllib.parse.urlencode(p)}", wait_until="commit")
            pages.append(page)
        pending = set(range(len(params)))
        titled: set[int] = set()
        queued: set[int] = set()
        while pending and time.monotonic() < deadline:
            for k in sorted(pending):
                try:
                    state = pages[k].evaluate(READ_PAGE)
                except PlaywrightError:
                    continue  # the page is still loading; try again on the next round
                if state["queued"] and k not in queued:
                    queued.add(k)
                if state["title"] and k not in titled:
                    titled.add(k)
                    report.first_s.append(time.monotonic() - started)
                if state["errors"]:
                    report.problems.append(f"session {k} ({params[k]}): error on the page: {state['errors']}")
                    pending.discard(k)
                elif len(state["values"]) >= 2 and state["charts"] >= 1 and state["activation"]:
                    seen[k] = state
                    report.times_s.append(time.monotonic() - started)
                    pending.discard(k)
            time.sleep(POLL_S)
        report.wall_s = time.monotonic() - started
        report.saw_queue = len(queued)
        for k in sorted(pending):
            report.problems.append(f"session {k} ({params[k]}): no results after {timeout_s:.0f} s")
    finally:
        for context in contexts:
            context.close()
        if manager is not None:
            browser.close()
            manager.stop()
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200, choices=(100, 200, 300, 500))
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds for all sessions to show results")
    args = parser.parse_args(argv)

    import torch

    from conftest import start_server

    torch.set_num_threads(1)  # the oracle trains like the server does
    proc, url = start_server()
    try:
        report = run(url, proc.pid, sessions=args.sessions, steps=args.steps, timeout_s=args.timeout)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(report.text())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
