"""The idle garbage collector: never during a run, once after a burst of runs, memory reclaimed."""
from __future__ import annotations

import gc
import threading
import time
import tomllib
import weakref
from pathlib import Path

from bnviz.idle_gc import IdleCollector

ROOT = Path(__file__).resolve().parents[1]


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_no_collection_during_a_run_one_after_it():
    calls = []
    collector = IdleCollector(quiet_s=0.05, min_interval_s=0.0, max_wait_s=60,
                              collect=lambda: calls.append(time.monotonic()))
    with collector.busy():
        time.sleep(0.3)          # far longer than quiet_s: a run in progress is never interrupted
        assert calls == []
    ended = time.monotonic()
    assert _wait_for(lambda: len(calls) == 1)
    assert calls[0] >= ended + 0.05 - 0.005    # not before the quiet time (monotonic clock, small slack)
    time.sleep(0.3)
    assert len(calls) == 1   # nothing happened since: nothing to collect


def test_nested_runs_count_as_one_busy_period():
    calls = []
    collector = IdleCollector(quiet_s=0.02, min_interval_s=0.0, max_wait_s=60, collect=lambda: calls.append(1))
    with collector.busy():
        with collector.busy():   # a part inside a page run
            pass
        time.sleep(0.2)          # the inner end must not start a collection while the outer runs
        assert calls == []
    assert _wait_for(lambda: calls == [1])


def test_bursts_are_collected_at_most_every_min_interval():
    calls = []
    collector = IdleCollector(quiet_s=0.01, min_interval_s=0.6, collect=lambda: calls.append(time.monotonic()))
    with collector.busy():
        pass
    assert _wait_for(lambda: len(calls) == 1)
    with collector.busy():
        pass
    time.sleep(0.2)
    assert len(calls) == 1       # within min_interval_s of the first
    assert _wait_for(lambda: len(calls) == 2)
    assert calls[1] - calls[0] >= 0.6 - 0.005


def test_a_run_starting_during_the_quiet_time_postpones_the_collection():
    calls = []
    collector = IdleCollector(quiet_s=0.3, min_interval_s=0.0, max_wait_s=60, collect=lambda: calls.append(1))
    with collector.busy():
        pass
    time.sleep(0.1)
    release = threading.Event()

    def long_run():
        with collector.busy():
            release.wait()

    t = threading.Thread(target=long_run)
    t.start()
    time.sleep(0.6)              # the first run's quiet time is long over, but a run is in progress
    assert calls == []
    release.set()
    t.join()
    assert _wait_for(lambda: calls == [1])


def test_a_failing_collection_does_not_stop_the_collector():
    calls = []

    def collect():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    collector = IdleCollector(quiet_s=0.01, min_interval_s=0.0, collect=collect)
    with collector.busy():
        pass
    assert _wait_for(lambda: len(calls) == 1)
    with collector.busy():
        pass
    assert _wait_for(lambda: len(calls) == 2)
    assert collector.collections == 2


def test_cyclic_garbage_is_reclaimed_after_the_run():
    class Node:
        pass

    collector = IdleCollector(quiet_s=0.05, min_interval_s=0.0)   # the real gc.collect
    was_enabled = gc.isenabled()
    gc.disable()                 # only the idle collector may reclaim the cycle
    try:
        with collector.busy():
            a, b = Node(), Node()
            a.other, b.other = b, a
            alive = weakref.ref(a)
            del a, b
            time.sleep(0.2)
            assert alive() is not None   # a cycle: reference counting alone never frees it
        assert _wait_for(lambda: alive() is None)
    finally:
        if was_enabled:
            gc.enable()


def test_the_app_turns_streamlits_collection_off_and_marks_its_runs_busy():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
    from bnviz import idle_gc, ui

    assert idle_gc.SHARED._busy == 0
    with ui.guard():
        assert idle_gc.SHARED._busy == 1
        raise ValueError("shown on the page, not raised")   # guard keeps the count right on errors too
    assert idle_gc.SHARED._busy == 0


def test_a_server_never_idle_is_still_collected_after_max_wait():
    calls = []
    collector = IdleCollector(quiet_s=0.05, min_interval_s=0.0, max_wait_s=0.4,
                              collect=lambda: calls.append(time.monotonic()))
    started = time.monotonic()
    with collector.busy():
        assert _wait_for(lambda: len(calls) == 1, timeout=10)   # during the run: it never ends quietly
        assert calls[0] - started >= 0.4 - 0.005
