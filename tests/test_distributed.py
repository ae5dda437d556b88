"""run_workers always ends its processes: after success, a failing worker, a timeout, or a Stop."""
import os
import time
from pathlib import Path

import psutil
import pytest
import torch.distributed as dist

from bnviz.distributed import DistributedError, run_workers

pytestmark = pytest.mark.timeout(240)


def _note_pid(folder: str, rank: int) -> None:
    Path(folder, f"{rank}.pid").write_text(str(os.getpid()))


def _allreduce_rank(rank, world_size, report, folder):
    import torch
    _note_pid(folder, rank)
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    report(1, 1)
    return t.item()


def _rank1_fails(rank, world_size, report, folder):
    _note_pid(folder, rank)
    if rank == 1:
        raise RuntimeError("planted failure")
    import torch
    dist.all_reduce(torch.zeros(1))     # rank 0 waits in a collective rank 1 never joins
    return rank


def _sleeps(rank, world_size, report, folder):
    _note_pid(folder, rank)
    while True:
        report(0, 1)
        time.sleep(0.2)


def _pids(folder: Path, n: int, wait_s: float = 30) -> list[int]:
    end = time.monotonic() + wait_s
    while len(list(folder.glob("*.pid"))) < n and time.monotonic() < end:
        time.sleep(0.1)
    return [int(p.read_text()) for p in folder.glob("*.pid")]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _no_children_left() -> bool:
    """No spawned worker left (other pools of the test process, forkserver ones, are not ours)."""
    return not [c for c in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(c.cmdline())]


def test_results_by_rank_and_processes_joined(tmp_path):
    assert run_workers(_allreduce_rank, 3, (str(tmp_path),), timeout_s=120) == [6.0, 6.0, 6.0]
    pids = _pids(tmp_path, 3)
    assert len(pids) == 3 and all(_gone(p) for p in pids) and _no_children_left()


def test_a_failing_worker_ends_the_job_with_its_message(tmp_path):
    start = time.monotonic()
    with pytest.raises(DistributedError, match="worker 1 failed: RuntimeError: planted failure"):
        run_workers(_rank1_fails, 2, (str(tmp_path),), timeout_s=120)
    assert time.monotonic() - start < 60          # not the job's time limit: rank 0 is killed
    pids = _pids(tmp_path, 2, wait_s=0)           # rank 0 may have been stopped before it wrote its pid
    assert pids and all(_gone(p) for p in pids) and _no_children_left()


def test_the_time_limit_stops_every_process(tmp_path):
    start = time.monotonic()
    with pytest.raises(DistributedError, match="did not finish within 15 s"):   # start-up (torch) fits in 15 s
        run_workers(_sleeps, 2, (str(tmp_path),), timeout_s=15)
    assert time.monotonic() - start < 30
    pids = _pids(tmp_path, 2, wait_s=0)
    assert len(pids) == 2 and all(_gone(p) for p in pids) and _no_children_left()


class Stop(Exception):
    """What a Streamlit session's Stop raises inside a progress callback."""


def test_a_stop_raised_by_progress_ends_every_process(tmp_path):
    def progress(done, total, text):
        if len(list(tmp_path.glob("*.pid"))) == 2:
            raise Stop
    with pytest.raises(Stop):
        run_workers(_sleeps, 2, (str(tmp_path),), timeout_s=120, progress=progress)
    pids = _pids(tmp_path, 2, wait_s=0)
    assert len(pids) == 2 and all(_gone(p) for p in pids) and _no_children_left()


def test_bad_world_size_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        run_workers(_allreduce_rank, 0, ("",))


def test_workers_of_a_killed_parent_exit_by_themselves(tmp_path):
    """SIGKILL leaves no finally to run: each worker's watchdog sees its parent gone and exits."""
    import signal
    import subprocess
    import sys
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from bnviz.distributed import run_workers\n"
              "import test_distributed as t\n"
              f"run_workers(t._sleeps, 2, ({str(tmp_path)!r},), timeout_s=300)\n")
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        pids = _pids(tmp_path, 2, wait_s=120)
        assert len(pids) == 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    end = time.monotonic() + 15
    while time.monotonic() < end and not all(_gone(p) for p in pids):
        time.sleep(0.2)
    assert all(_gone(p) for p in pids)
