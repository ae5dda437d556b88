"""Full garbage collections when the server is idle, never in the middle of an interaction.

Streamlit runs ``gc.collect(2)`` at the end of every script run, fragment reruns included (its
hidden option ``runner.postScriptGC``). In bnviz's server that takes 12-57 ms, holding the GIL:
the messages of the run it ends wait behind it, and so does a display control that reruns parts
of the page (the run the control started is stopped, collected, and only then the parts run).
The app turns that option off (``.streamlit/config.toml``) and collects here instead: in a
thread of its own, once no run is in progress and none has ended for ``quiet_s``, at most once
every ``min_interval_s``. Memory is reclaimed as before (a full collection after each burst of
activity, and Python's own generational collections meanwhile); a click no longer waits for it.
A server never idle (many sessions at once) is still collected ``max_wait_s`` after the first
run since the last collection, run or no run: its memory stays bounded as with Streamlit's.
"""
from __future__ import annotations

import gc
import logging
import math
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

log = logging.getLogger("bnviz")


class IdleCollector:
    """Runs ``collect`` when the code it is told about (:meth:`busy`) has been quiet a while.

    >>> collector = IdleCollector()
    >>> with collector.busy():      # a script run
    ...     ...
    # ~quiet_s later, nothing running: one gc.collect() in the collector's thread
    """

    def __init__(self, quiet_s: float = 0.3, min_interval_s: float = 1.0, max_wait_s: float = 5.0,
                 collect: Callable[[], object] = gc.collect, clock: Callable[[], float] = time.monotonic):
        self.quiet_s, self.min_interval_s, self.max_wait_s = quiet_s, min_interval_s, max_wait_s
        self._collect, self._clock = collect, clock
        self._cond = threading.Condition()
        self._busy = 0                 # runs in progress
        self._pending = False          # a run happened since the last collection: garbage may wait
        self._pending_since = math.inf # when the first of those runs started
        self._last_activity = -math.inf
        self._last_collect = -math.inf
        self._thread: threading.Thread | None = None
        self.collections = 0

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Around a run: no collection starts while one is in progress; one follows its end."""
        with self._cond:
            self._busy += 1
            if not self._pending:
                self._pending, self._pending_since = True, self._clock()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="bnviz-idle-gc", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._last_activity = self._clock()
                self._cond.notify()

    def _due(self) -> float | None:
        """When the next collection may start; None while there is nothing to wait for."""
        if not self._pending:
            return None
        forced = self._pending_since + self.max_wait_s
        if self._busy:
            return forced
        return min(forced, max(self._last_activity + self.quiet_s, self._last_collect + self.min_interval_s))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    due = self._due()
                    now = self._clock()
                    if due is not None and now >= due:
                        break
                    # a run starting meanwhile is seen when the wait ends (_due() is then the forced time)
                    self._cond.wait(None if due is None else due - now)
                self._pending, self._pending_since = False, math.inf
            try:  # outside the lock: a run that starts now must not wait for it
                self._collect()
            except Exception:  # noqa: BLE001 - a failed collection must not end the thread
                log.exception("idle garbage collection failed")
            with self._cond:
                self._last_collect = self._clock()
                self.collections += 1


# The app's one collector (bnviz.ui.guard marks every page and part run busy with it).
SHARED = IdleCollector()
