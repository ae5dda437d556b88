"""The run store against independent oracles: what was written (real Snapshots from tap_stats and
numpy), record.Thinned fed the same steps, a writer process killed with SIGKILL, a reader that
follows a writer process, and files that are not runs."""
from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bnviz.record import LOSS_CAP, SNAPSHOT_CAP, LayerInfo, NormStats, Snapshot, TapStats, Thinned, tap_stats
from bnviz.store import RUN_FILE, RunFileError, RunWriter, list_runs, open_run, resolve_run

EDGES = {"pre_activation": np.linspace(-8, 8, 161, dtype=np.float32),
         "norm_output": np.linspace(-8, 8, 161, dtype=np.float32),
         "post_activation": np.linspace(0, 5, 101, dtype=np.float32),
         "output": np.linspace(0, 5, 101, dtype=np.float32)}
C = 6
LAYERS = [
    LayerInfo("features.1", "BatchNorm1d", "batch", C, momentum=0.1, eps=1e-5, affine=True,
              tracks_running_stats=True, activation="ReLU"),
    LayerInfo("features.4", "LayerNorm", "layer", C, eps=1e-5, affine=True, activation="GELU"),
    LayerInfo("head.act", "", None, 0, activation="ReLU"),   # recorded at its activation only
]


def _snapshot(step: int, rng: np.random.Generator) -> Snapshot:
    """Tap statistics of random tensors by bnviz.record.tap_stats, norm state computed in numpy."""
    taps, norms = {}, {}
    for layer, info in enumerate(LAYERS):
        x = rng.normal(0.5, 2.0, size=(16, C)).astype(np.float32)
        if info.family is not None:
            taps[(layer, "norm_output")] = tap_stats(torch.from_numpy((x - x.mean(0)) / x.std(0)), EDGES["norm_output"])
        taps[(layer, "pre_activation")] = tap_stats(torch.from_numpy(x), EDGES["pre_activation"])
        taps[(layer, "post_activation")] = tap_stats(torch.relu(torch.from_numpy(x)), EDGES["post_activation"])
        if info.family is None:   # a diverging layer: NaN and inf are counted; all NaN, the moments are NaN
            y = x.copy()
            y[::3] = np.nan
            y[1::5] = np.inf
            if step == 20:
                y[:] = np.nan
            taps[(layer, "output")] = tap_stats(torch.from_numpy(y), EDGES["output"])
        if info.family == "batch":
            norms[layer] = NormStats(x.mean(0), x.var(0), rng.normal(size=C).astype(np.float32),
                                     rng.uniform(0.5, 2, size=C).astype(np.float32),
                                     rng.normal(1, 0.1, size=C).astype(np.float32), rng.normal(0, 0.1, size=C).astype(np.float32),
                                     count=16, training=step % 2 == 0, frozen=False, num_batches_tracked=step + 1)
        elif info.family == "layer":   # statistics per sample: no running buffers, no batch counter
            norms[layer] = NormStats(None, None, None, None, np.ones(C, np.float32), np.zeros(C, np.float32),
                                     count=C, training=True, frozen=True, num_batches_tracked=None)
    return Snapshot(step, taps, norms)


def _tiny_snapshot(step: int, version: int = 0) -> Snapshot:
    """One layer, one tap, every number derived from the step: a reader can check any row."""
    v = float(step + version / 10)
    tap = TapStats(counts=np.full(len(EDGES["output"]) - 1, step, np.int32), below=step, above=version,
                   nonfinite=0, percentiles=np.full(14, v, np.float32), unit_percentiles=np.full(14, -v, np.float32),
                   mean=v, std=1.0, zero_frac=0.0, n=100 * step)
    a = np.full(C, v, np.float32)
    return Snapshot(step, {(0, "output"): tap}, {0: NormStats(a, a + 1, a + 2, a + 3, a + 4, a + 5, count=step)})


def _same(a, b) -> bool:
    """Field by field: arrays equal with their dtype, floats equal or both NaN."""
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if x is None or y is None or x.dtype != y.dtype or not np.array_equal(x, y, equal_nan=True):
                return False
        elif isinstance(x, float) and math.isnan(x):
            if not (isinstance(y, float) and math.isnan(y)):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


def _writer(run_dir, **kw) -> RunWriter:
    w = RunWriter(run_dir, layers=LAYERS, meta={"model": "TinyNet", "rank": 0, "world_size": 1, "lr": 0.1,
                                                "note": None, "amp": False}, **kw)
    w.set_edges(EDGES)
    return w


# ----- round trip ---------------------------------------------------------------------------------
def test_snapshots_scalars_and_meta_read_back_as_written(tmp_path):
    rng = np.random.default_rng(0)
    snaps = [_snapshot(step, rng) for step in (0, 20, 40, 60)]
    losses = {step: 2.0 / (step + 1) for step in range(61)}
    losses[33] = math.nan
    losses[34] = math.inf
    with _writer(tmp_path / "runs" / "a") as w:
        for step in range(61):
            if step % 20 == 0:
                w.add_snapshot(snaps[step // 20])
            w.add_scalars(step, {"loss": losses[step], **({"lr": 0.1 * 0.5 ** step} if step < 3 else {})})
            w.commit()
        live = open_run(tmp_path / "runs" / "a")
        assert live.status == "running" and list(live.snapshot_steps) == [0, 20, 40, 60]

    run = open_run(tmp_path / "runs" / "a")
    assert run.path == tmp_path / "runs" / "a" and run.file == run.path / RUN_FILE
    assert run.layers == LAYERS and run.norm_layers == ["features.1", "features.4"]
    assert run.status == "finished"
    meta = run.meta
    assert {k: meta[k] for k in ("model", "rank", "world_size", "lr", "note", "amp")} == {
        "model": "TinyNet", "rank": 0, "world_size": 1, "lr": 0.1, "note": None, "amp": False}
    assert meta["pid"] == os.getpid() and meta["hostname"] and meta["status"] == "finished"
    assert meta["created"] <= meta["updated"] <= time.time() and meta["last_step"] == 60

    h = run.history()
    assert h.config is None and h.layer_names == [layer.name for layer in LAYERS]
    assert h.edges.keys() == EDGES.keys() and all(np.array_equal(h.edges[t], EDGES[t]) for t in EDGES)
    assert h.snapshots.steps == [0, 20, 40, 60]
    for got, want in zip(h.snapshots, snaps):
        assert got.step == want.step
        assert list(got.taps) == list(want.taps) and list(got.norms) == list(want.norms)
        assert all(_same(got.taps[k], want.taps[k]) for k in want.taps)
        assert all(_same(got.norms[k], want.norms[k]) for k in want.norms)
    steps, loss, acc = h.loss_curve()
    assert list(steps) == list(range(61)) and np.isnan(acc).all()
    np.testing.assert_array_equal(loss, [losses[s] for s in range(61)])   # NaN and inf kept
    assert h.taps == ["pre_activation", "norm_output", "post_activation", "output"] and len(h.evals) == 0
    nan_step = h.snapshots[1].taps[(2, "output")]
    assert nan_step.n == 0 and nan_step.nonfinite == 16 * C and math.isnan(nan_step.mean)

    steps, mean, var = run.batch_stats("features.1")
    assert list(steps) == [0, 20, 40, 60] and mean.dtype == np.float32 and mean.shape == (4, C)
    np.testing.assert_array_equal(mean, [s.norms[0].batch_mean for s in snaps])
    np.testing.assert_array_equal(var, [s.norms[0].batch_var for s in snaps])
    _, rm, rv = run.running_stats("features.1")
    np.testing.assert_array_equal(rm, [s.norms[0].running_mean for s in snaps])
    np.testing.assert_array_equal(rv, [s.norms[0].running_var for s in snaps])
    _, weight, bias = run.params("features.1")
    np.testing.assert_array_equal(weight, [s.norms[0].weight for s in snaps])
    np.testing.assert_array_equal(bias, [s.norms[0].bias for s in snaps])
    _, rm, rv = run.running_stats("features.4")           # LayerNorm keeps no running statistics
    assert rm.shape == (4, C) and np.isnan(rm).all() and np.isnan(rv).all()
    state = run.layer_state("features.1")
    assert list(state["count"]) == [16] * 4 and list(state["training"]) == [True] * 4
    assert list(state["frozen"]) == [False] * 4 and list(state["num_batches_tracked"]) == [1, 21, 41, 61]
    state = run.layer_state("features.4")
    assert list(state["frozen"]) == [True] * 4 and np.isnan(state["num_batches_tracked"]).all()

    assert run.scalar_names == ["loss", "lr"]
    steps, lr = run.scalars("lr")
    assert list(steps) == [0, 1, 2] and list(lr) == [0.1, 0.05, 0.025]


def test_unknown_names_raise_key_errors_that_list_the_known_ones(tmp_path):
    with _writer(tmp_path) as w:
        w.add_snapshot(_snapshot(0, np.random.default_rng(1)))
        w.add_scalars(0, {"loss": 1.0})
    run = open_run(tmp_path)
    with pytest.raises(KeyError, match="features.1, features.4"):
        run.batch_stats("features.2")
    with pytest.raises(KeyError, match="no normalization module"):
        run.running_stats("head.act")
    with pytest.raises(KeyError, match="it has: loss"):
        run.scalars("accuracy")


def test_the_writer_refuses_what_it_could_not_read_back(tmp_path):
    w = _writer(tmp_path / "a")
    w.add_snapshot(_tiny_snapshot(10))
    with pytest.raises(ValueError, match="steps must not decrease"):
        w.add_snapshot(_tiny_snapshot(5))
    with pytest.raises(ValueError, match="fixed for a run"):
        w.set_edges(EDGES)
    bad = Snapshot(20, {(0, "norm_input"): _tiny_snapshot(20).taps[(0, "output")]}, {})
    with pytest.raises(ValueError, match="no histogram edges for tap 'norm_input'"):
        w.add_snapshot(bad)
    with pytest.raises(ValueError, match="layer index 7"):
        w.add_snapshot(Snapshot(20, {}, {7: _tiny_snapshot(20).norms[0]}))
    short = dataclasses.replace(_tiny_snapshot(20).norms[0], weight=np.ones(C - 1, np.float32))
    with pytest.raises(ValueError, match=f"lengths \\[{C - 1}, {C}\\]"):
        w.add_snapshot(Snapshot(20, {}, {0: short}))
    with pytest.raises(ValueError, match="lengths"):   # one length per layer for the whole run
        w.add_snapshot(Snapshot(20, {}, {0: NormStats(*[np.ones(C + 1, np.float32)] * 6)}))
    w.add_snapshot(Snapshot(20, {}, {}))   # a model with nothing recorded at that step
    w.close()
    w.close()   # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        w.add_scalars(30, {"loss": 1.0})
    assert [(s.step, s.taps, s.norms) for s in open_run(tmp_path / "a").history().snapshots][1:] == [(20, {}, {})]
    with pytest.raises(ValueError, match="written by the run store"):
        RunWriter(tmp_path / "b", layers=LAYERS, meta={"status": "x"})
    with pytest.raises(TypeError, match="meta\\['path'\\]"):
        RunWriter(tmp_path / "b", layers=LAYERS, meta={"path": tmp_path})


def test_an_exception_in_the_with_block_marks_the_run_failed(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with _writer(tmp_path) as w:
            w.add_scalars(0, {"loss": 1.0})
            w.commit()
            1 / 0
    assert open_run(tmp_path).status == "failed"


def test_an_existing_run_is_replaced_only_with_overwrite(tmp_path):
    first = _writer(tmp_path / "a")
    first.add_snapshot(_tiny_snapshot(0))
    first.commit()
    # What a killed writer leaves: the file and a WAL holding its commits.
    shutil.copytree(tmp_path / "a", tmp_path / "killed")
    assert (tmp_path / "killed" / f"{RUN_FILE}-wal").exists()
    first.close()
    with pytest.raises(FileExistsError, match="overwrite=True") as err:
        _writer(tmp_path / "a")
    assert str(tmp_path / "a" / RUN_FILE) in str(err.value)
    for name in ("a", "killed"):
        with _writer(tmp_path / name, overwrite=True) as w:
            w.add_snapshot(_tiny_snapshot(7))
        assert list(open_run(tmp_path / name).snapshot_steps) == [7], name


# ----- thinning -----------------------------------------------------------------------------------
def test_snapshot_thinning_equals_record_thinned_fed_the_same_steps(tmp_path):
    """Irregular steps (the cadence is the caller's), a repeated newest step replacing its
    snapshot, four doublings of the stride; checked after every commit of a reader's view."""
    rng = np.random.default_rng(3)
    oracle: Thinned[Snapshot] = Thinned(SNAPSHOT_CAP, stride=3)
    w = _writer(tmp_path, every=3)
    step = 0
    for i in range(700):
        step += 3 * int(rng.integers(1, 3)) if i else 0
        snap = _tiny_snapshot(step)
        w.add_snapshot(snap)
        oracle.add(step, snap)
        if i % 50 == 7:   # the newest step again: it replaces the snapshot, as in Thinned
            snap = _tiny_snapshot(step, version=1)
            w.add_snapshot(snap)
            oracle.add(step, snap)
        if i % 25 == 0 or i == 699:
            w.commit()
            run = open_run(tmp_path)
            assert list(run.snapshot_steps) == oracle.steps and run.meta["snapshot_stride"] == oracle.stride
    assert oracle.stride == 48   # doubled four times: the thinning was exercised, not just matched
    h = open_run(tmp_path).history()
    assert h.snapshots.steps == oracle.steps and h.snapshots.stride == oracle.stride
    for got, want in zip(h.snapshots, oracle):
        assert _same(got.taps[(0, "output")], want.taps[(0, "output")]) and _same(got.norms[0], want.norms[0])
    with sqlite3.connect(tmp_path / RUN_FILE) as db:   # the rows of dropped steps are gone
        assert db.execute("SELECT count(*) FROM snapshots").fetchone()[0] == len(oracle.steps)
        assert db.execute("SELECT count(*) FROM norms").fetchone()[0] == len(oracle.steps)
    w.close()


def test_each_scalar_series_is_thinned_like_record_thinned(tmp_path):
    # The writer is given every step; the oracle is fed as train() feeds its History: the steps
    # that are due, and the newest one (here: the last of each series).
    oracles = {"loss": Thinned(LOSS_CAP), "lr": Thinned(LOSS_CAP)}
    last = {"loss": 9_999, "lr": 9_998}
    with _writer(tmp_path) as w:
        for step in range(10_000):
            values = {"loss": 1.0 / (step + 1)} | ({"lr": step * 0.5} if step % 2 == 0 else {})
            w.add_scalars(step, values)
            for name, v in values.items():
                if oracles[name].due(step) or step == last[name]:
                    oracles[name].add(step, v)
            if step % 500 == 0:
                w.commit()
    run = open_run(tmp_path)
    for name, oracle in oracles.items():
        steps, values = run.scalars(name)
        assert list(steps) == oracle.steps and list(values) == oracle.items, name
        assert run.meta["scalar_strides"][name] == oracle.stride
        assert np.diff(steps).max() <= oracle.stride                      # no part of the run left sparse
    assert oracles["loss"].stride == 4 and oracles["lr"].stride == 4   # both series were thinned
    h = run.history()
    assert h.losses.steps == oracles["loss"].steps and h.losses.stride == 4
    assert [loss for loss, _ in h.losses] == oracles["loss"].items


def test_a_long_scalar_series_keeps_its_whole_history_evenly(tmp_path):
    with _writer(tmp_path) as w:
        for step in range(60_000):
            w.add_scalars(step, {"loss": float(step)})
    steps, values = open_run(tmp_path).scalars("loss")
    assert LOSS_CAP // 2 <= len(steps) <= LOSS_CAP + 1 and steps[0] == 0 and steps[-1] == 59_999
    stride = open_run(tmp_path).meta["scalar_strides"]["loss"]
    assert np.diff(steps).max() <= stride and np.array_equal(values, steps.astype(float))


# ----- other processes ---------------------------------------------------------------------------
def _write_steps(run_dir: Path, steps: int, conn=None) -> None:
    """A training process's writer: commits step after step, says which it committed, and has
    the next step's scalars in an open transaction when it is killed."""
    w = RunWriter(run_dir, layers=LAYERS, meta={})
    w.set_edges(EDGES)
    for step in range(steps):
        w.add_snapshot(_tiny_snapshot(step))
        w.add_scalars(step, {"loss": float(step)})
        w.commit()
        if conn is not None:
            conn.send_bytes(str(step).encode())
        w.add_scalars(step + 1, {"pending": 1.0})
        time.sleep(0.002)
    w.close()


# Forked, the writer process starts in milliseconds (torch is imported already) instead of seconds.
_FORK = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
needs_fork = pytest.mark.skipif(_FORK is None, reason="needs os.fork and SIGKILL (POSIX)")


def _check_consistent(h) -> None:
    """Every row a reader sees belongs to a whole, committed step."""
    assert h.snapshots.steps == sorted(set(h.snapshots.steps)) and len(h.snapshots) <= SNAPSHOT_CAP
    assert len(h.snapshots) == 0 or h.edges.keys() == EDGES.keys()   # set before the first snapshot
    for snap in h.snapshots:
        assert _same(snap.taps[(0, "output")], _tiny_snapshot(snap.step).taps[(0, "output")])
        assert _same(snap.norms[0], _tiny_snapshot(snap.step).norms[0])
    steps, loss, _ = h.loss_curve()
    assert list(loss) == [float(s) for s in steps]
    assert len(steps) == len(h.snapshots) == 0 or steps[-1] == h.snapshots.steps[-1]   # one commit per step


@needs_fork
@pytest.mark.skipif(not hasattr(os, "waitid") or not Path("/proc/self/stat").exists(), reason="Linux's /proc and waitid")
def test_a_killed_writer_not_yet_reaped_is_stopped_not_running(tmp_path):
    """SIGKILLed, its exit seen by waitid with WNOWAIT (so not reaped: a zombie, whose pid still
    answers os.kill(pid, 0)), the writer's run reads "stopped"; it read "running" for as long as
    its parent lived (a training started with subprocess.Popen and no wait)."""
    receive, send = _FORK.Pipe(duplex=False)
    child = _FORK.Process(target=_write_steps, args=(tmp_path / "run", 100_000, send))
    child.start()
    for _ in range(3):
        receive.recv_bytes()
    assert open_run(tmp_path / "run").status == "running"
    os.kill(child.pid, signal.SIGKILL)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)        # exited, still a zombie
    try:
        os.kill(child.pid, 0)                                        # what the store asked alone
        assert open_run(tmp_path / "run").status == "stopped"
    finally:
        child.join()


@needs_fork
def test_a_writer_killed_with_sigkill_leaves_every_committed_step(tmp_path):
    receive, send = _FORK.Pipe(duplex=False)
    child = _FORK.Process(target=_write_steps, args=(tmp_path / "run", 100_000, send))
    child.start()
    committed = [int(receive.recv_bytes()) for _ in range(40)]
    os.kill(child.pid, signal.SIGKILL)
    child.join()   # reaped: a zombie's pid would still answer os.kill(pid, 0)
    assert child.exitcode == -signal.SIGKILL and committed == list(range(40))
    run = open_run(tmp_path / "run")
    assert run.status == "stopped"
    steps, loss = run.scalars("loss")
    last = int(steps[-1])   # the kill may come after a commit and before its print
    assert last >= 39 and list(steps) == list(range(last + 1))
    oracle = Thinned(SNAPSHOT_CAP)
    for step in range(last + 1):
        oracle.add(step, None)
    h = run.history()
    assert h.snapshots.steps == oracle.steps
    _check_consistent(h)
    assert list(run.scalars("pending")[0]) == list(range(1, last + 1))   # not the one open at the kill


@needs_fork
def test_a_reader_follows_a_writer_process_and_sees_whole_steps(tmp_path):
    steps_total = 260   # past SNAPSHOT_CAP: rows are deleted while the reader reads
    child = _FORK.Process(target=_write_steps, args=(tmp_path / "run", steps_total))
    child.start()
    deadline = time.monotonic() + 60
    while not (tmp_path / "run" / RUN_FILE).exists():
        assert child.is_alive() and time.monotonic() < deadline
        time.sleep(0.005)
    run = open_run(tmp_path / "run")   # the file appears complete (made aside, then moved in place)
    seen, last = [], -1
    while True:
        done = not child.is_alive()
        h = run.history()
        _check_consistent(h)
        newest = h.snapshots.steps[-1] if len(h.snapshots) else -1
        assert newest >= last
        last = newest
        seen.append(newest)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.002)
    child.join()
    assert child.exitcode == 0
    assert time.monotonic() < deadline
    assert len(set(seen)) > 10   # the reader did read while the writer wrote
    assert run.status == "finished" and last == steps_total - 1
    oracle = Thinned(SNAPSHOT_CAP)
    for step in range(steps_total):
        oracle.add(step, None)
    assert run.history().snapshots.steps == oracle.steps


# ----- files that are not runs ---------------------------------------------------------------------
def _real_run(folder: Path) -> Path:
    with _writer(folder) as w:
        rng = np.random.default_rng(4)
        for step in range(0, 200, 10):
            w.add_snapshot(_snapshot(step, rng))
            w.commit()
    return folder / RUN_FILE


def _truncated(file: Path) -> None:
    _real_run(file.parent)
    os.truncate(file, file.stat().st_size // 2)


def _truncated_to_a_header(file: Path) -> None:
    _real_run(file.parent)
    os.truncate(file, 100)


def _random_bytes(file: Path) -> None:
    file.write_bytes(np.random.default_rng(5).bytes(3 * 4096))


def _empty_sqlite(file: Path) -> None:
    with sqlite3.connect(file) as db:
        db.execute("PRAGMA user_version = 1")


def _other_sqlite(file: Path) -> None:
    with sqlite3.connect(file) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users VALUES (1, 'ada')")


def _other_meta(file: Path) -> None:
    with sqlite3.connect(file) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("""INSERT INTO meta VALUES ('format', '"mlflow"')""")


def _newer_version(file: Path) -> None:
    _real_run(file.parent)
    with sqlite3.connect(file) as db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'version'")


def _text(file: Path) -> None:
    file.write_text("step,loss\n0,2.30\n1,2.10\n" * 50)


@pytest.mark.parametrize("make, words", [
    (_truncated, "truncated"), (_truncated_to_a_header, "truncated"), (_random_bytes, "not a SQLite database"),
    (_empty_sqlite, "empty SQLite database"), (_other_sqlite, "another program (tables: users)"),
    (_other_meta, "format 'mlflow'"), (_newer_version, "version 2; this bnviz reads version 1: upgrade"),
    (_text, "not a SQLite database"), (lambda f: f.write_bytes(b""), "empty SQLite database"),
], ids=["truncated", "truncated-to-100-bytes", "random-bytes", "empty-sqlite", "other-sqlite", "other-format",
        "newer-version", "text", "zero-bytes"])
def test_a_file_that_is_not_a_readable_run_raises_run_file_error_naming_it(tmp_path, make, words):
    file = tmp_path / "run" / RUN_FILE
    file.parent.mkdir()
    make(file)
    with pytest.raises(RunFileError) as err:
        open_run(file.parent).history()
    assert str(file) in str(err.value) and words in str(err.value)
    [summary] = list_runs(tmp_path)
    assert summary.error == str(err.value) and summary.status == "damaged"


# ----- finding runs -------------------------------------------------------------------------------
@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "runs"
    for name in ("resnet", "mlp/seed-1"):
        with _writer(root / name) as w:
            w.add_scalars(5, {"loss": 1.0})
        time.sleep(0.01)
    for rank in (0, 1):
        with RunWriter(root / "ddp" / f"rank-{rank}", layers=LAYERS[:1],
                       meta={"rank": rank, "world_size": 2}) as w:
            w.add_scalars(9, {"loss": 1.0})
        time.sleep(0.01)
    (root / "broken").mkdir()
    (root / "broken" / RUN_FILE).write_text("not a run")
    (root / "empty").mkdir()
    _writer(root / "a" / "b" / "c" / "too-deep").close()
    _writer(tmp_path / "elsewhere").close()
    (root / "escape").symlink_to(tmp_path / "elsewhere")
    (root / "linked-file").mkdir()
    (root / "linked-file" / RUN_FILE).symlink_to(tmp_path / "elsewhere" / RUN_FILE)
    return root


def test_list_runs_lists_every_run_newest_first_and_damaged_ones_with_their_error(runs_root):
    runs = {r.name: r for r in list_runs(runs_root)}
    assert set(runs) == {"resnet", "mlp/seed-1", "ddp/rank-0", "ddp/rank-1", "broken", "linked-file"}
    good = [r.name for r in list_runs(runs_root) if r.error is None]
    assert good == ["ddp/rank-1", "ddp/rank-0", "mlp/seed-1", "resnet"]
    assert runs["resnet"].status == "finished" and runs["resnet"].last_step == 5 and runs["resnet"].layers == 3
    assert runs["resnet"].path == runs_root / "resnet"
    assert (runs["ddp/rank-1"].rank, runs["ddp/rank-1"].world_size, runs["ddp/rank-1"].layers) == (1, 2, 1)
    assert "not a SQLite database" in runs["broken"].error and runs["broken"].status == "damaged"
    assert "outside" in runs["linked-file"].error


def test_resolve_run_accepts_names_inside_the_root_only(runs_root):
    assert resolve_run(runs_root, "resnet") == (runs_root / "resnet").resolve()
    assert resolve_run(runs_root, "mlp/seed-1") == (runs_root / "mlp" / "seed-1").resolve()
    assert resolve_run(runs_root, "ddp") == (runs_root / "ddp").resolve()   # a distributed job: rank 0
    for name, words in [("../elsewhere", "'..'"), ("resnet/../resnet", "'..'"), ("/etc", "absolute"),
                        (str(runs_root / "resnet"), "absolute"), ("C:/runs", "absolute"), ("a\\..\\b", "backslash"),
                        ("escape", "outside the runs folder"), ("linked-file", "outside the runs folder"),
                        ("nope", "no run named 'nope'"), ("empty", "no run named 'empty'"), ("", "no run name"),
                        (f"resnet/{RUN_FILE}", "no run named")]:
        with pytest.raises(ValueError, match=words):
            resolve_run(runs_root, name)


def test_open_run_takes_a_folder_its_file_or_a_distributed_jobs_rank(runs_root):
    assert open_run(runs_root / "resnet" / RUN_FILE).path == runs_root / "resnet"
    assert open_run(runs_root / "ddp").meta["rank"] == 0
    assert open_run(runs_root / "ddp", rank=1).meta["rank"] == 1
    with pytest.raises(FileNotFoundError, match="its ranks: 0, 1"):
        open_run(runs_root / "ddp", rank=2)
    with pytest.raises(FileNotFoundError, match=f"holds no {RUN_FILE}"):
        open_run(runs_root / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_run(runs_root / "missing")


def test_a_run_whose_norms_table_lacks_a_column_is_refused_by_name(tmp_path):
    with _writer(tmp_path) as w:
        pass
    with sqlite3.connect(tmp_path / RUN_FILE) as db:
        db.execute("ALTER TABLE norms DROP COLUMN samples")
    with pytest.raises(RunFileError, match=f"{RUN_FILE}.*other columns"):
        open_run(tmp_path).history()
