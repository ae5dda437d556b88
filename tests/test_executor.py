"""bnviz.executor: a run trained in a worker process (local pool or Dask) is the run the server
trains itself, bit for bit; results stream as they finish; the queue is bounded, ordered and
cancellable. Oracle: bnviz.train.train in this process, and the order in which work must finish."""
import dataclasses
import math
import os
import signal
import time
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
import torch

from bnviz import executor as ex
from bnviz.config import Config, ConfigError
from bnviz.train import train

pytestmark = pytest.mark.timeout(300)

SMALL = Config(steps=60, width=32, depth=2, record_every=10, eval_every=20)


def snooze(seconds: float, report=None) -> float:
    """A task that holds a slot for ``seconds`` and reports twice (workers import this module)."""
    half = seconds / 2
    for k in range(2):
        time.sleep(half)
        if report is not None and report(k + 1, 2, None) is False:
            return -1.0
    return seconds


def die_once(marker: str, report=None) -> str:
    """Kill the worker running it the first time (as the out-of-memory killer would); return the
    second time (the marker file remembers)."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return "ran again"


def die(report=None) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def assert_identical(a, b, path="history"):
    """Every number of ``a`` equals ``b``'s exactly (arrays: same dtype and bits; NaN = NaN)."""
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or a == b, f"{path}: {a!r} != {b!r}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_identical(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}[{i}]")
    elif dataclasses.is_dataclass(a) or hasattr(a, "__dict__"):
        fields = vars(a) if not hasattr(a, "__dataclass_fields__") else {f: getattr(a, f) for f in a.__dataclass_fields__}
        for name, value in fields.items():
            if name != "elapsed_s":  # wall-clock time, the one thing that may differ
                assert_identical(value, getattr(b, name), f"{path}.{name}")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def pool():
    executor = ex.Executor(slots=2)
    yield executor
    executor.shutdown()


def check_same_as_here(packed: ex.PackedRun, config: Config) -> None:
    here = train(config)
    assert_identical(packed.history, here.history)
    there = ex.unpack(packed)
    for (name, a), (_, b) in zip(here.model.state_dict().items(), there.model.state_dict().items()):
        assert torch.equal(a, b), name
    x = here.dataset.x_test
    assert torch.equal(here.model(x), there.model(x))  # the rebuilt model predicts as the trained one


@pytest.mark.parametrize("config", [SMALL, SMALL.replace(norm="none", seed=3),
                                    SMALL.replace(dataset="digits-image", arch="cnn", steps=30, bn_diagnostics=True)])
def test_a_worker_trains_the_same_run_bit_for_bit(pool, config):
    [task] = [t for t in pool.as_completed([pool.submit(ex.train_packed, config)])]
    check_same_as_here(task.result(), config)


def test_results_stream_in_the_order_they_finish(pool):
    pool.warm()                 # both workers up: on a loaded machine starting one can take seconds
    slow = pool.submit(snooze, 5.0)
    fast = pool.submit(snooze, 0.2)
    order = [t for t in pool.as_completed([slow, fast])]
    assert order == [fast, slow]
    assert slow.result() == 5.0


def test_progress_reaches_the_server_while_a_run_trains(pool):
    task = pool.submit(ex.train_packed, SMALL.replace(steps=200, eval_every=20))
    seen = []
    for t in pool.as_completed([task], tick=0.05):
        if t is None and task.progress is not None:
            seen.append(task.progress[0])
    assert seen and min(seen) < 200  # a report before the end, with the history so far
    assert task.result().history.finished


def test_the_queue_is_bounded_ordered_and_cancellable():
    one = ex.Executor(slots=1)
    try:
        first, second, third = (one.submit(snooze, 1.5) for _ in range(3))
        deadline = time.monotonic() + 60
        while first.state != ex.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert one.busy() == (1, 2)
        assert [one.position(t) for t in (first, second, third)] == [0, 0, 1]
        one.release(second)                      # a session gives up its place
        assert second.state == ex.CANCELLED and one.position(third) == 0
        done = [t for t in one.as_completed([first, second, third])]
        assert set(done) == {first, second, third} and third.result() == 1.5
    finally:
        one.shutdown()


def test_a_running_task_stops_at_its_next_report_when_its_last_owner_leaves(pool):
    task = pool.submit(ex.train_packed, SMALL.replace(steps=5000, eval_every=10), key="long")
    again = pool.submit(ex.train_packed, SMALL.replace(steps=5000, eval_every=10), key="long")
    assert again is task and task.owners == 2   # a second session asking for the same run shares it
    for t in pool.as_completed([task], tick=0.05):
        if task.progress is not None:
            pool.release(task)
            if task.owners == 1:
                pool.release(task)
    history = task.result().history
    assert history.stopped_at is not None and history.stopped_at < 5000


def test_an_error_in_a_worker_is_raised_where_the_result_is_read(pool):
    [task] = list(pool.as_completed([pool.submit(ex.train_packed, SMALL.replace(batch_size=1))]))
    assert task.state == ex.FAILED
    with pytest.raises(ConfigError):
        task.result()


def test_a_task_whose_worker_died_runs_again_once_in_a_new_pool(tmp_path):
    # A worker killed from outside breaks the whole pool: the task beside it fails too. Both run
    # again (the page sees its result, not the error); a task that kills its worker every time
    # fails after its second try, and the executor still runs what comes next.
    executor = ex.Executor(slots=2)
    try:
        executor.warm()
        beside = executor.submit(snooze, 1.0)
        killed = executor.submit(die_once, str(tmp_path / "died"))
        for _ in executor.as_completed([beside, killed]):
            pass
        assert killed.result() == "ran again" and beside.result() == 1.0
        always = executor.submit(die)
        list(executor.as_completed([always]))
        with pytest.raises(BrokenProcessPool):
            always.result()
        after = executor.submit(snooze, 0.2)
        list(executor.as_completed([after]))
        assert after.result() == 0.2
    finally:
        executor.shutdown()


def test_the_same_code_runs_on_a_dask_cluster_bit_for_bit():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask = ex.Executor(scheduler=cluster.scheduler_address)
        try:
            assert dask.slots == 2
            configs = [SMALL.replace(seed=s) for s in range(3)]
            tasks = [dask.submit(ex.train_packed, c) for c in configs]
            finished = [t for t in dask.as_completed(tasks)]
            assert set(finished) == set(tasks)
            for task, config in zip(tasks, configs):
                check_same_as_here(task.result(), config)
            slow, fast = dask.submit(snooze, 4.0), dask.submit(snooze, 0.1)
            assert [t for t in dask.as_completed([slow, fast])] == [fast, slow]
        finally:
            dask.shutdown()


def read_env(name: str, report=None) -> str | None:
    import os
    return os.environ.get(name)


def test_a_worker_reads_the_data_folder_the_server_has_now(pool, monkeypatch, tmp_path):
    pool.map(snooze, [(0.01,)] * 2)                        # the workers exist before the change
    monkeypatch.setenv("BNVIZ_DATA_DIR", str(tmp_path))
    assert pool.map(read_env, [("BNVIZ_DATA_DIR",)] * 4) == [str(tmp_path)] * 4


def test_a_worker_does_not_run_the_page_script_streamlit_put_in_main(tmp_path, monkeypatch):
    """Streamlit runs a page as sys.modules["__main__"]; a worker started meanwhile must not run it."""
    import sys
    import types

    marker = tmp_path / "ran"
    script = tmp_path / "page.py"
    script.write_text(f"open({str(marker)!r}, 'w').write('the page ran in a worker')\n")
    page = types.ModuleType("__main__")
    page.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", page)
    fresh = ex.Executor(slots=2)
    try:
        fresh.warm()
        assert fresh.map(snooze, [(0.01,)]) == [0.01]
    finally:
        fresh.shutdown()
    assert not marker.exists()


def chatter(reports: int, report=None) -> None:
    """Reports ``reports`` times in quick succession, payload k at report k (workers import this)."""
    for k in range(reports):
        report(k + 1, reports, k)


def test_the_first_payloads_are_sent_at_once_then_at_most_one_a_second(monkeypatch):
    """A run's starting point and its first recorded steps reach the page at once (the first live
    histogram must not wait a second: a short run would end before it); after that payloads are
    throttled, and the last report always carries its payload."""
    import queue
    sent = queue.Queue()
    monkeypatch.setattr(ex, "_progress", sent)
    monkeypatch.setattr(ex, "_cancelled", [-1] * ex.CANCEL_RING)
    start = time.monotonic()
    ex._run_local(7, chatter, (40,), {})
    assert time.monotonic() - start < ex.PAYLOAD_EVERY_S           # all 40 within one throttle period
    got = [sent.get_nowait() for _ in range(40)]
    assert [g[1] for g in got] == list(range(1, 41)) and {g[0] for g in got} == {7}
    payloads = [g[3] for g in got if g[3] is not None]
    assert payloads == [*range(ex.FIRST_PAYLOADS), 39]
