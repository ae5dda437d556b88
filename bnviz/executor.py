"""One executor for every independent run: seeds, sweeps, the networks of an experiment.

Runs of different configs (or seeds) share nothing, so they train side by side: one worker process
per core by default, each with one torch thread (small networks gain nothing from more, and a
run's numbers do not depend on how many there are). A server shares one executor between all its
sessions, and that is the admission rule: at most ``slots`` trainings at a time, the others wait
in one first-come queue whose order a session can read (:meth:`Executor.position`) and leave
(:meth:`Executor.release`).

    ex = Executor()                                  # local pool, or Dask if BNVIZ_SCHEDULER is set
    tasks = [ex.submit(train_packed, cfg, key=cfg) for cfg in configs]
    for task in ex.as_completed(tasks):              # each as it finishes, not in order
        run = unpack(task.result())

Why processes, and why ``forkserver``: Python training loops hold the GIL most of the time, so
threads would not use the second core; and forking the server itself (``fork``) copies a process
that already runs torch's and Streamlit's threads, which can deadlock the child. A forkserver is a
fresh single-threaded process that imports torch and bnviz once (preload); each worker is a fork of
it, started in milliseconds instead of the ~2 s a ``spawn``ed worker pays to import torch.

The same code runs on Dask distributed when a scheduler address is configured
(``BNVIZ_SCHEDULER=tcp://host:8786``): Dask brings what a pool on one machine lacks (workers on
other machines, a scheduler that survives a worker's death), and its futures have the same shape.
Ray would do as well but is a far larger install for what is used here.

What crosses processes is compact and picklable: a run's :class:`~bnviz.record.History` and its
model's weights as numpy arrays (:class:`PackedRun`), never a live model or a dataset; the server
rebuilds the model from the config (:func:`unpack`). A worker trains with the same code and the
same seeded generators as the server would, so the numbers are the same bit for bit
(``tests/test_executor.py``).
"""
from __future__ import annotations

import atexit
import dataclasses
import functools
import itertools
import logging
import math
import multiprocessing
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Iterator

import numpy as np

from .config import Config
from .record import History

log = logging.getLogger("bnviz")

SCHEDULER_ENV = "BNVIZ_SCHEDULER"   # a Dask scheduler address: run there instead of a local pool
SLOTS_ENV = "BNVIZ_SLOTS"           # trainings at a time (default: one per core)
CONTEXT = "forkserver"
CANCEL_RING = 4096                  # cancelled task ids a worker can see (a ring: ids only grow)
# Environment a run reads (where local MNIST files are): sent with each task as the server has it
# when the task is submitted, so a worker started earlier reads the files the server would.
TASK_ENV = ("BNVIZ_DATA_DIR",)
# A report's payload (a run's history so far: megabytes once pickled, ~0.1 s) is sent at most this
# often; reports in between carry the step count alone. The first FIRST_PAYLOADS payloads are
# always sent: a run's starting point, then its first recorded steps (the first live histograms),
# while they are small; waiting a second for them left a short run with no live histogram at all.
PAYLOAD_EVERY_S = 1.0
FIRST_PAYLOADS = 2

# A worker function takes its arguments and ``report(done, total, payload) -> bool``; it reports
# progress through it (``payload``: something to show meanwhile, e.g. the history so far) and stops
# early when it returns False (the task was cancelled).
Report = Callable[[int, int, Any], bool]


def default_slots() -> int:
    raw = os.environ.get(SLOTS_ENV, "")
    return max(1, int(raw)) if raw.isdigit() else max(1, os.cpu_count() or 1)


# ----------------------------------------------------------------------------------------------
# What a training run sends back


@dataclass(frozen=True)
class PackedRun:
    """A finished (or stopped) run as it crosses processes: the :class:`bnviz.train.Run` without its
    model and data set (whatever else a Run records comes along) and the model's final weights
    (``state_dict`` as numpy arrays)."""

    run: Any                        # bnviz.train.Run with model=None, dataset=None
    state: dict[str, np.ndarray]

    @property
    def config(self) -> Config:
        return self.run.config

    @property
    def history(self) -> History:
        return self.run.history


def train_packed(config: Config, trace: bool = False, report: Report | None = None) -> PackedRun:
    """:func:`bnviz.train.train` of ``config`` in a worker; progress (the history so far) goes
    through ``report`` at every evaluation, and a False from it stops the run there. ``trace``:
    keep the BN batch trace another momentum is derived from (pages with a momentum control)."""
    from .train import train

    def progress(done: int, total: int, history: History) -> bool:
        return report is None or report(done, total, history)

    run = train(config, progress, trace=trace)
    state = {k: v.detach().numpy().copy() for k, v in run.model.state_dict().items()}
    return PackedRun(run=dataclasses.replace(run, model=None, dataset=None), state=state)


def unpack(packed: PackedRun):
    """The :class:`bnviz.train.Run` a PackedRun describes: its data set loaded again from the config
    (a pure function of it) and its network built and given the worker's final weights."""
    import torch

    from .data import load
    from .models import build

    data = load(packed.config)
    model = build(packed.config, tuple(data.x_train.shape[1:]), data.n_classes)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in packed.state.items()})
    model.eval()
    return dataclasses.replace(packed.run, model=model, dataset=data)


# ----------------------------------------------------------------------------------------------
# The worker side


_progress: Any = None        # the queue a local worker reports on
_cancelled: Any = None       # ring of cancelled task ids (shared memory)


def _init_local_worker(progress_queue: Any, cancelled: Any) -> None:
    global _progress, _cancelled
    import torch
    torch.set_num_threads(1)
    _progress, _cancelled = progress_queue, cancelled


def _set_env(env: dict[str, str | None]) -> None:
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _run_local(task_id: int, fn: Callable[..., Any], args: tuple, env: dict[str, str | None]) -> Any:
    _set_env(env)
    last, sent = [-math.inf], [0]

    def report(done: int, total: int, payload: Any = None) -> bool:
        now = time.monotonic()
        if payload is not None and (sent[0] < FIRST_PAYLOADS or now - last[0] >= PAYLOAD_EVERY_S or done == total):
            last[0] = now
            sent[0] += 1
        else:
            payload = None
        _progress.put((task_id, done, total, payload))
        return _cancelled[task_id % CANCEL_RING] != task_id
    return fn(*args, report=report)


def _noop(report: Report | None = None) -> None:
    return None


def _run_dask(fn: Callable[..., Any], args: tuple, env: dict[str, str | None]) -> Any:
    # Dask's workers run tasks in threads of their own process; one torch thread each, as locally.
    import torch
    torch.set_num_threads(1)
    _set_env(env)
    return fn(*args, report=None)


# ----------------------------------------------------------------------------------------------
# Tasks and the executor


QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"


class Task:
    """One submitted call. ``progress`` is the last (done, total, payload) it reported."""

    def __init__(self, task_id: int, key: Hashable, fn: Callable[..., Any], args: tuple):
        self.id, self.key, self.fn, self.args = task_id, key, fn, args
        self.env = {name: os.environ.get(name) for name in TASK_ENV}
        self.state = QUEUED
        self.owners = 1
        self.progress: tuple[int, int, Any] | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._future: Any = None
        self.retried = False   # already submitted again once after its worker died

    def done(self) -> bool:
        return self.state in (DONE, FAILED, CANCELLED)

    def result(self) -> Any:
        """The call's return value; re-raises its exception in the caller."""
        if self.state == CANCELLED:
            raise RuntimeError("the task was cancelled")
        if self._error is not None:
            raise self._error
        if self.state != DONE:
            raise RuntimeError("the task has not finished")
        return self._result

    def __repr__(self) -> str:
        return f"Task({self.id}, {self.fn.__name__}, {self.state})"


_launching = threading.Lock()


def _without_main(get_preparation_data: Callable[[str], dict], name: str) -> dict:
    data = get_preparation_data(name)
    data.pop("init_main_from_path", None)
    data.pop("init_main_from_name", None)
    return data


class _WorkerProcess(multiprocessing.get_context(CONTEXT).Process):
    """A worker process that does not run the parent's ``__main__`` again.

    A new spawn or forkserver process imports the parent's main module first (so that functions
    defined in a script can be unpickled). In a Streamlit server the "main module" is whatever
    page script is running at that moment (Streamlit puts it in ``sys.modules["__main__"]``): the
    worker would run a page. Workers only run functions of importable modules, so they skip it.
    """

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        from multiprocessing import spawn
        with _launching:
            real = spawn.get_preparation_data
            spawn.get_preparation_data = functools.partial(_without_main, real)
            try:
                return multiprocessing.get_context(CONTEXT).Process._Popen(process_obj)
            finally:
                spawn.get_preparation_data = real


class _WorkerContext(type(multiprocessing.get_context(CONTEXT))):
    Process = _WorkerProcess


PRELOAD = ["bnviz.executor", "bnviz.train"]   # what the forkserver imports once, for every worker


class _LocalPool:
    def __init__(self, slots: int):
        ctx = _WorkerContext()
        if CONTEXT == "forkserver":
            ctx.set_forkserver_preload(PRELOAD)
        self.progress = ctx.Queue()
        self.cancelled = ctx.Array("q", [-1] * CANCEL_RING, lock=False)
        self._ctx, self._slots = ctx, slots
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self._slots, mp_context=self._ctx, initializer=_init_local_worker,
                                   initargs=(self.progress, self.cancelled))

    def submit(self, task: Task) -> Any:
        try:
            return self.pool.submit(_run_local, task.id, task.fn, task.args, task.env)
        except BrokenProcessPool:  # a worker died (killed, out of memory): start a new pool
            self.pool = self._new_pool()
            return self.pool.submit(_run_local, task.id, task.fn, task.args, task.env)

    def cancel_running(self, task: Task) -> None:
        self.cancelled[task.id % CANCEL_RING] = task.id

    def exit_codes(self) -> str:
        """How the pool's worker processes ended, for the log (-9: killed, e.g. out of memory)."""
        processes = getattr(self.pool, "_processes", None) or {}   # private; only for the message
        codes = {pid: p.exitcode for pid, p in processes.items() if p.exitcode is not None}
        return f"exit codes {codes}" if codes else "exit code unknown"

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _DaskPool:
    def __init__(self, address: str):
        from distributed import Client
        self.client = Client(address, set_as_default=False, timeout="10s")
        self.progress = None

    def slots(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, task: Task) -> Any:
        return self.client.submit(_run_dask, task.fn, task.args, task.env, pure=False, key=f"bnviz-{os.getpid()}-{task.id}")

    def exit_codes(self) -> str:
        return "exit code unknown"

    def cancel_running(self, task: Task) -> None:
        # Dask drops the result; the worker's thread finishes the run in the background.
        if task._future is not None:
            task._future.cancel()

    def shutdown(self) -> None:
        self.client.close()


class Executor:
    """A bounded pool of workers and the one queue in front of it (see the module docstring)."""

    def __init__(self, slots: int | None = None, scheduler: str | None = None):
        scheduler = scheduler if scheduler is not None else os.environ.get(SCHEDULER_ENV) or None
        self.scheduler = scheduler
        self.backend = _DaskPool(scheduler) if scheduler else _LocalPool(slots or default_slots())
        self.slots = slots or (self.backend.slots() if scheduler else default_slots())
        self._cond = threading.Condition()
        self._pending: deque[Task] = deque()
        self._running: dict[int, Task] = {}
        self._by_key: dict[Hashable, Task] = {}
        self._ids = itertools.count()
        self._closed = False
        if self.backend.progress is not None:
            threading.Thread(target=self._read_progress, name="bnviz-progress", daemon=True).start()

    # ----- submitting and leaving ------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], *args: Any, key: Hashable | None = None) -> Task:
        """Queue ``fn(*args, report=...)``. A ``key`` already queued or running (another session
        asked for the same run) gives that task, with one more owner, instead of a second one."""
        with self._cond:
            if key is not None:
                task = self._by_key.get(key)
                if task is not None and not task.done():
                    task.owners += 1
                    return task
            task = Task(next(self._ids), key, fn, args)
            if key is not None:
                self._by_key[key] = task
            self._pending.append(task)
            self._dispatch()
            return task

    def release(self, task: Task, grace: float = 0.0) -> None:
        """One owner no longer wants ``task`` (a session moved on or pressed Stop); the task is
        cancelled when no owner is left: removed from the queue, or stopped at its next report.

        ``grace``: wait that many seconds first; a submit of the same key meanwhile (a page that
        reran with the same settings) takes the task over instead of starting it again."""
        with self._cond:
            if task.done():
                return
            task.owners -= 1
            if task.owners > 0:
                return
        if grace > 0:
            timer = threading.Timer(grace, self._drop_if_unowned, (task,))
            timer.daemon = True
            timer.start()
        else:
            self._drop_if_unowned(task)

    def _drop_if_unowned(self, task: Task) -> None:
        with self._cond:
            if task.done() or task.owners > 0:
                return
            if task.state == QUEUED:
                self._pending.remove(task)
                self._finish(task, CANCELLED)
                return
            self.backend.cancel_running(task)
            if self._by_key.get(task.key) is task:  # it is stopping: the same key starts afresh
                del self._by_key[task.key]

    def position(self, task: Task) -> int:
        """Tasks queued before ``task`` (0: it is next, or already running or done)."""
        with self._cond:
            if task.state != QUEUED:
                return 0
            for i, t in enumerate(self._pending):
                if t is task:
                    return i
            return 0

    def busy(self) -> tuple[int, int]:
        """(running, queued) tasks right now."""
        with self._cond:
            return len(self._running), len(self._pending)

    # ----- waiting ---------------------------------------------------------------------------------
    def as_completed(self, tasks: Iterable[Task], tick: float | None = None) -> Iterator[Task | None]:
        """Yield each of ``tasks`` as it finishes (done, failed or cancelled). With ``tick``, also
        yield None every ``tick`` seconds while none finishes: the caller's chance to show
        progress or queue positions (and, in Streamlit, to be interrupted)."""
        left = list(tasks)
        while left:
            with self._cond:
                finished = [t for t in left if t.done()]
                if not finished:
                    self._cond.wait(timeout=tick)
                    finished = [t for t in left if t.done()]
            for t in finished:
                left.remove(t)
                yield t
            if not finished and tick is not None:
                yield None

    def map(self, fn: Callable[..., Any], argss: Iterable[tuple]) -> list[Any]:
        """``[fn(*args) for args in argss]`` through the pool, in order (errors re-raised)."""
        tasks = [self.submit(fn, *args) for args in argss]
        for _ in self.as_completed(tasks):
            pass
        return [t.result() for t in tasks]

    def warm(self) -> None:
        """Start every worker now, not when the first run is submitted (a forkserver imports torch
        first, ~2 s of CPU: a server pays it while its first page is read, not while a user waits)."""
        self.map(_noop, [()] * self.slots)

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            for t in list(self._pending):
                self._finish(t, CANCELLED)
            self._pending.clear()
        self.backend.shutdown()

    # ----- inside --------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        while self._pending and len(self._running) < self.slots and not self._closed:
            task = self._pending.popleft()
            task.state = RUNNING
            self._running[task.id] = task
            self._hand_to_backend(task)

    def _hand_to_backend(self, task: Task) -> None:
        """Give a running task to the backend (at dispatch, or again after its worker died); the task
        fails if the backend refuses it."""
        try:
            task._future = self.backend.submit(task)
        except Exception as exc:  # noqa: BLE001 - the task fails, the executor goes on
            task._error = exc
            self._finish(task, FAILED)
            return
        task._future.add_done_callback(lambda fut, task=task: self._done(task, fut))

    def _done(self, task: Task, fut: Any) -> None:
        with self._cond:
            if task.done():
                return
            try:
                task._result = fut.result()
                self._finish(task, DONE)
            except BrokenProcessPool as exc:
                # A worker process died (killed from outside, out of memory, a crash in native
                # code): every task running in that pool fails with this, whichever one caused it.
                # Each is run once more in a new pool (the next submit starts it); a task that
                # breaks its worker again fails for good, with this error.
                if task.retried or self._closed:
                    task._error = exc
                    self._finish(task, FAILED)
                else:
                    log.warning("a worker process died (%s); running %r again", self.backend.exit_codes(), task)
                    task.retried = True
                    self._hand_to_backend(task)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the task
                task._error = exc
                self._finish(task, CANCELLED if fut.cancelled() else FAILED)
            self._dispatch()

    def _finish(self, task: Task, state: str) -> None:
        task.state = state
        self._running.pop(task.id, None)
        if self._by_key.get(task.key) is task:
            del self._by_key[task.key]
        self._cond.notify_all()

    def _read_progress(self) -> None:
        while True:
            try:
                task_id, done, total, payload = self.backend.progress.get(timeout=1.0)
            except queue.Empty:
                if self._closed:
                    return
                continue
            except (EOFError, OSError, ValueError):  # the queue was closed at shutdown
                return
            with self._cond:
                task = self._running.get(task_id)
                if task is not None:
                    if payload is None and task.progress is not None:
                        payload = task.progress[2]  # the last one sent
                    task.progress = (done, total, payload)
                    self._cond.notify_all()


_shared: Executor | None = None
_shared_lock = threading.Lock()


def shared() -> Executor:
    """The process-wide executor every session of a server submits to (created on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            started = time.perf_counter()
            _shared = Executor()
            atexit.register(_shared.shutdown)
            log.info("executor: %d slot(s) on %s, started in %.2f s", _shared.slots,
                     _shared.scheduler or f"a local {CONTEXT} pool", time.perf_counter() - started)
        return _shared
