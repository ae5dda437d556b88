"""Independent runs side by side, and many sessions on one server.

- ``parallel_speedup_10_runs``: ten default runs (the home page's ``Config()``, seeds 0-9) one after
  another in this process, over the same ten through :class:`bnviz.executor.Executor` (one worker
  per core, already started: a server starts its pool once). Wall time: the point is to use the
  cores this process alone does not. Both sides alternate (serial, pool, pool, serial, ...; 4 rounds) so a
  change of the shared machine's load hits both; the value is the median of the per-round ratios.
  The detail says the load average: on a machine other processes use, the ratio is pessimistic,
  and with Linux's autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``) a busy
  machine gives this session one share of the CPU however many processes it runs, so the ratio
  tends to 1 under load. The detail also reports the cores each side kept busy (CPU seconds of
  this process, and of its workers, per wall second): about 1 and ``slots`` on an idle machine, and
  ``ceiling``: the same ratio for a pure-Python loop (no torch, nothing to send back) measured right
  before, the most any pool could get from the machine at that moment.
- ``load_32_sessions_s`` / ``load_32_peak_rss_mb``: ``tools/load_test.py`` with 32 browser sessions
  at once on one ``streamlit run app.py`` (each its own config, 200 steps): seconds until every
  session shows its own results, and the peak resident memory of the server and its workers.
"""
from __future__ import annotations

import os
import statistics
import time

from bnviz.config import Config

from . import Result, loadavg


def _cpu_seconds() -> float:
    """CPU time of this process and of its children (the pool's workers), live ones included."""
    import psutil
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _autogroup() -> str | None:
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            return f.read().strip()
    except OSError:
        return None


def spin(n: int, report: object = None) -> int:
    """A pure-Python loop: CPU work with nothing to import, send or unpack."""
    total = 0
    for i in range(n):
        total += i
    return total


def _ceiling(pool, n: int) -> float:
    """One after another / side by side for ``slots`` copies of :func:`spin`: what the machine
    gives a pool of processes right now."""
    t = time.perf_counter()
    for _ in range(pool.slots):
        spin(n)
    serial = time.perf_counter() - t
    t = time.perf_counter()
    pool.map(spin, [(n,)] * pool.slots)
    return serial / (time.perf_counter() - t)


def _speedup(quick: bool) -> Result:
    import torch

    from bnviz import executor
    from bnviz.train import train

    torch.set_num_threads(1)
    configs = [Config(seed=k, steps=50 if quick else Config().steps) for k in range(10)]
    pool = executor.Executor()
    try:
        started = time.perf_counter()
        pool.map(executor.train_packed, [(c,) for c in configs[:pool.slots]])  # start the workers
        warm_up_s = time.perf_counter() - started

        def serial() -> list:
            return [train(c).history for c in configs]

        def parallel() -> list:
            return [executor.unpack(p).history for p in pool.map(executor.train_packed, [(c,) for c in configs])]

        ceiling = [round(_ceiling(pool, 2_000_000 if quick else 20_000_000), 2)]
        walls: dict[str, list[float]] = {"serial": [], "parallel": []}
        cores: dict[str, list[float]] = {"serial": [], "parallel": []}
        load = [loadavg()[0]]
        for r in range(1 if quick else 4):   # 4 rounds: one round the machine gives less than 2 cores moves a median of 2
            for name, fn in ((("serial", serial), ("parallel", parallel)) if r % 2 == 0 else
                             (("parallel", parallel), ("serial", serial))):
                t, cpu = time.perf_counter(), _cpu_seconds()
                fn()
                walls[name].append(time.perf_counter() - t)
                cores[name].append(round((_cpu_seconds() - cpu) / walls[name][-1], 2))
            load.append(loadavg()[0])
        ceiling.append(round(_ceiling(pool, 2_000_000 if quick else 20_000_000), 2))
        ratios = [s / p for s, p in zip(walls["serial"], walls["parallel"])]
        return Result("parallel_speedup_10_runs", ratios, "x",
                      "10 default runs one after another / the same through the executor (wall time; >= 1.8 on "
                      "2 idle cores)", target=1.8, at_least=True,
                      detail={"serial_s": walls["serial"], "parallel_s": walls["parallel"], "slots": pool.slots,
                              "cores": os.cpu_count(), "pool_start_s": round(warm_up_s, 2),
                              "cores_busy": cores, "ceiling": ceiling, "loadavg_1min": load, "autogroup": _autogroup()})
    finally:
        pool.shutdown()


def _load(quick: bool) -> list[Result]:
    from tools import load_test  # puts tests/ on the path, for conftest's server helpers
    from conftest import start_server, stop_server

    sessions = 2 if quick else 32
    load_before = loadavg()[0]
    proc, url = start_server()
    try:
        report = load_test.run(url, proc.pid, sessions=sessions, steps=100 if quick else 200,
                               timeout_s=600)
    finally:
        stop_server(proc)
    detail = {"sessions": sessions, "problems": report.problems, "times_s": [round(t, 1) for t in report.times_s],
              "saw_queue": report.saw_queue, "server_cpu_s": round(report.server_cpu_s, 1),
              "loadavg_1min": [load_before, loadavg()[0]]}
    if report.problems:
        print("\n".join(report.problems[:10]))
    return [Result("load_32_sessions_s", [report.wall_s], "s",
                   f"{sessions} browser sessions opened at once on one server, each its own config: seconds until "
                   "all show their own results", detail=detail),
            Result("load_32_peak_rss_mb", [report.rss_peak_mb], "MB",
                   "peak resident memory of that server and its training workers", target=2048, detail=detail)]


def run(quick: bool) -> list[Result]:
    results = [_speedup(quick)]
    try:
        results += _load(quick)
    except Exception as exc:  # noqa: BLE001 - keep the speed-up measured before the browser part failed
        exc.results = results
        raise
    return results
