"""A small ``torch.distributed`` job on this machine: start, watch, and always tear down.

:func:`run_workers` starts ``world_size`` processes (``torch.multiprocessing``'s spawn context),
each joining a gloo process group on CPU, runs ``fn(rank, world_size, report, *args)`` in each and
returns their results by rank. What it guarantees, because a web page starts it:

* bounded in time: after ``timeout_s`` the job is abandoned (and every collective operation of
  the group times out too);
* always torn down: every process is joined, or terminated and killed, when the job ends, fails
  in one worker, times out, or the caller's ``progress`` raises (a Streamlit session's Stop
  raises inside ``progress``);
* no orphans: a worker whose parent disappears (killed) exits by itself within a second;
* a clean error, :class:`DistributedError`, saying what went wrong, never a hang.

Process start-up dominates small jobs: each worker imports torch (about 2 s on a 2-core machine).
"""
from __future__ import annotations

import os
import pickle
import queue as queue_module
import shutil
import tempfile
import threading
import time
import traceback
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["DistributedError", "Report", "run_workers", "distributed_available"]

# (done, total) from one worker; run_workers passes (done, total, text) summed over workers.
Report = Callable[[int, int], None]
Progress = Callable[[int, int, str], None]
GRACE_S = 3.0        # a finished worker's time to exit on its own before it is terminated
POLL_S = 0.2


class DistributedError(RuntimeError):
    """A distributed job that could not start, failed in a worker, or ran out of time."""


def distributed_available() -> str | None:
    """None if gloo process groups can run here; else why not (for the page to show)."""
    if not dist.is_available():
        return "this PyTorch build has no torch.distributed"
    if not dist.is_gloo_available():
        return "this PyTorch build has no gloo backend (needed for CPU processes)"
    return None


def _watch_parent(parent: int, deadline: float) -> None:
    """In a worker: exit when the parent process is gone or the job's time is over."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent or time.monotonic() > deadline:
            os._exit(3)


def _worker(rank: int, world_size: int, init_file: str, messages: Any, fn: Callable[..., Any],
            args: tuple, timeout_s: float, parent: int) -> None:
    threading.Thread(target=_watch_parent, args=(parent, time.monotonic() + timeout_s + 5), daemon=True).start()
    torch.set_num_threads(1)  # world_size processes share the machine's cores
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        messages.put(("error", rank, f"could not join the process group: {type(exc).__name__}: {exc}"))
        return
    try:
        result = fn(rank, world_size, lambda done, total: messages.put(("progress", rank, (done, total))), *args)
        # Pickled here, with plain pickle: torch.multiprocessing would pass tensors as shared memory
        # handles, which are gone once this process has exited.
        messages.put(("done", rank, pickle.dumps(result)))
    except Exception as exc:  # noqa: BLE001
        messages.put(("error", rank, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))
    finally:
        dist.destroy_process_group()


def run_workers(fn: Callable[..., Any], world_size: int, args: tuple = (), *, timeout_s: float = 120.0,
                progress: Progress | None = None) -> list[Any]:
    """Run ``fn(rank, world_size, report, *args)`` in ``world_size`` fresh processes of one gloo
    process group; return the results, indexed by rank.

    ``fn`` must be importable by name (a module-level function: spawned processes import it), as
    must ``args`` and the results be picklable. ``report(done, total)`` in a worker reaches
    ``progress(done, total, text)`` here (summed over workers). Raises :class:`DistributedError`
    if a worker fails (its message included) or exits early, or after ``timeout_s`` seconds;
    whatever happens, every process has ended when this returns or raises.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    why_not = distributed_available()
    if why_not:
        raise DistributedError(why_not)
    context = mp.get_context("spawn")
    messages = context.Queue()
    rendezvous = tempfile.mkdtemp(prefix="bnviz-dist-")
    init_file = os.path.join(rendezvous, "init")
    processes = [context.Process(target=_worker, daemon=True, name=f"bnviz-worker-{rank}",
                                 args=(rank, world_size, init_file, messages, fn, args, timeout_s, os.getpid()))
                 for rank in range(world_size)]
    finished = False
    try:
        for p in processes:
            p.start()
        results = _collect(processes, messages, world_size, time.monotonic() + timeout_s, timeout_s, progress)
        finished = True
        return results
    finally:
        _tear_down(processes, grace_s=GRACE_S if finished else 0.0)
        messages.close()
        messages.join_thread()
        shutil.rmtree(rendezvous, ignore_errors=True)


def _collect(processes: list, messages: Any, world_size: int, deadline: float, timeout_s: float,
             progress: Progress | None) -> list[Any]:
    results: dict[int, Any] = {}
    done = {rank: (0, 0) for rank in range(world_size)}
    while len(results) < world_size:
        if progress is not None:
            steps, total = sum(d for d, _ in done.values()), sum(t for _, t in done.values())
            progress(steps, total, f"{world_size} processes, {len(results)} finished")
        # Checked at every message, not only when none comes: workers that report progress more
        # often than POLL_S would otherwise never meet the time limit (their own watchdogs, 5 s
        # later, would end them with a misleading "exited" instead). The time limit first: on a
        # starved machine this loop may wake only after those watchdogs fired, and that is still it.
        if time.monotonic() > deadline:
            raise DistributedError(f"the {world_size} processes did not finish within {timeout_s:g} s; "
                                   "they were stopped (the machine may be busy: try fewer steps)")
        try:
            kind, rank, payload = messages.get(timeout=POLL_S)
        except queue_module.Empty:
            for rank, p in enumerate(processes):
                if rank not in results and p.exitcode is not None:
                    raise DistributedError(f"worker {rank} exited (code {p.exitcode}) before it finished")
            continue
        if kind == "error":
            raise DistributedError(f"worker {rank} failed: {payload}")
        if kind == "progress":
            done[rank] = payload
        else:
            results[rank] = pickle.loads(payload)
    return [results[rank] for rank in range(world_size)]


def _tear_down(processes: list, grace_s: float) -> None:
    """Join every started process: give them ``grace_s`` to exit on their own (after a job that
    finished), terminate the others, kill what still stands."""
    end = time.monotonic() + grace_s
    for p in processes:
        if p.pid is not None:
            p.join(timeout=max(end - time.monotonic(), 0.0))
    for p in processes:
        if p.pid is not None and p.is_alive():
            p.terminate()
    for p in processes:
        if p.pid is not None:
            p.join(timeout=1.0)
            if p.is_alive():
                p.kill()
                p.join()
