"""The run store: one SQLite file per recorded run, written by a training process, read by the app.

Why SQLite from the standard library, in WAL mode: a training process appends a few tens of
kilobytes per recorded step, may be killed at any moment, and the app reads the same file while it
grows. In WAL mode a commit is atomic, readers see the last commit without blocking the writer,
and a process killed mid-transaction leaves every earlier commit intact. ``synchronous=NORMAL``
makes a commit durable against a crashed or killed process (not against a power cut) without an
fsync per commit.

Only numbers are stored: arrays as raw little-endian BLOBs read back with ``np.frombuffer``
(float32 as recorded, int32 histogram counts; a tap's mean, std and counts of values, which
TapStats holds as Python floats and ints, as float64 and int64 so they read back exactly),
metadata as JSON text; nothing is ever unpickled. The ``meta``
table's ``format``/``version`` rows tell a run from any other SQLite file, so a foreign, damaged or
truncated file is reported as :class:`RunFileError` naming the file, never as a sqlite3 traceback.

A run stays bounded however long it trains, exactly as :class:`~bnviz.record.History` does: the
snapshots are thinned by :class:`~bnviz.record.Thinned`'s rule (cap ``SNAPSHOT_CAP``: past it,
keep the steps that are multiples of the doubled stride, and the newest), each scalar series
likewise (cap ``LOSS_CAP``). The writer keeps the kept steps in memory, deletes the dropped rows in
the same transaction as the row that made them drop, and mirrors the strides in ``meta``, so a
reader rebuilds the History the writing process would hold.

Schema (version 1)::

    meta(key TEXT PRIMARY KEY, value TEXT)           JSON values: the writer's meta, format,
                                                     version, created, updated, status, pid,
                                                     hostname, last_step, snapshot_stride,
                                                     scalar_strides {name: stride}
    layers(idx INTEGER PRIMARY KEY, info TEXT)       LayerInfo as JSON; idx = its position
    edges(tap TEXT PRIMARY KEY, edges BLOB)          float32 histogram bin edges per tap
    snapshots(step INTEGER PRIMARY KEY, taps TEXT, counts BLOB, percentiles BLOB,
              unit_percentiles BLOB, totals BLOB, moments BLOB)
        one row per snapshot, its K tap summaries packed in the order of ``taps`` (JSON
        [[layer, tap name], ...]): counts int32 (each tap's bins in turn, as many as its edges
        make), percentiles and unit_percentiles float32 (K, P), totals int64 (K, 4: below,
        above, nonfinite, n), moments float64 (K, 3: mean, std, zero_frac)
    norms(step, layer, batch_mean .. bias BLOB (NULL: absent), count, training, frozen, samples,
          num_batches_tracked)                                    PRIMARY KEY (step, layer)
    scalars(name, step, value REAL)                               PRIMARY KEY (name, step)

Why one row per snapshot for its taps: a snapshot is written, read and thinned whole, and one row
instead of one per tap (40 for 10 layers) makes each of those several times cheaper; dropping a
snapshot then frees whole overflow pages instead of rewriting every page of a per-tap table.
SQLite stores a NaN REAL as NULL: a NULL scalar reads back as NaN.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .record import (EVAL_CAP, LOSS_CAP, SNAPSHOT_CAP, History, LayerInfo, NormStats, Snapshot, TapStats,
                     Thinned)

RUN_FILE = "bnviz-run.sqlite"
FORMAT = "bnviz-run"
VERSION = 1
MAX_DEPTH = 3            # how deep list_runs looks under its root: root/project/job/rank-0
BUSY_TIMEOUT_S = 5.0     # a reader waits this long for a lock (only WAL recovery takes one)

_F32 = np.dtype("<f4")
_I32 = np.dtype("<i4")
_I64 = np.dtype("<i8")
_F64 = np.dtype("<f8")
_NORM_ARRAYS = ("batch_mean", "batch_var", "running_mean", "running_var", "weight", "bias")
_TABLES = ("meta", "layers", "edges", "snapshots", "norms", "scalars")
# Keys the store writes itself; a writer's meta may not use them.
_RESERVED = ("format", "version", "created", "updated", "status", "pid", "hostname", "last_step",
             "snapshot_stride", "scalar_strides")
_RANK_DIR = re.compile(r"rank-(\d+)")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE layers (idx INTEGER PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE edges (tap TEXT PRIMARY KEY, edges BLOB NOT NULL);
CREATE TABLE snapshots (step INTEGER PRIMARY KEY, taps TEXT NOT NULL, counts BLOB NOT NULL,
                        percentiles BLOB NOT NULL, unit_percentiles BLOB NOT NULL,
                        totals BLOB NOT NULL, moments BLOB NOT NULL);
CREATE TABLE norms (step INTEGER NOT NULL, layer INTEGER NOT NULL,
                    batch_mean BLOB, batch_var BLOB, running_mean BLOB, running_var BLOB, weight BLOB, bias BLOB,
                    count INTEGER NOT NULL, training INTEGER NOT NULL, frozen INTEGER NOT NULL,
                    num_batches_tracked INTEGER, samples INTEGER NOT NULL,
                    PRIMARY KEY (step, layer));
CREATE TABLE scalars (name TEXT NOT NULL, step INTEGER NOT NULL, value REAL, PRIMARY KEY (name, step));
"""
# The norms table's columns in order: rows are written and read by position.
NORM_COLUMNS = ("step", "layer", "batch_mean", "batch_var", "running_mean", "running_var", "weight", "bias", "count",
                "training", "frozen", "num_batches_tracked", "samples")


# What decoding a damaged file's values raises (a BLOB that reads back as TEXT after a flipped
# bit, a meta value of another type, a JSON list where an object was written, ...): inside a
# read, each is reported as a RunFileError naming the file, never as a traceback of internals.
_DAMAGE = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)


class RunFileError(Exception):
    """A run file that cannot be read as a bnviz run (not SQLite, another program's database, a
    newer format, truncated or damaged); the message names the file and says what is wrong."""


# ----- thinning ---------------------------------------------------------------------------------
class _Thinning:
    """The steps a bounded series keeps, by :class:`~bnviz.record.Thinned`'s rule.

    Thinned keeps the items themselves; the store keeps rows in a database, so this says which
    steps to delete instead. Steps must not decrease; a repeated newest step replaces its row
    (the caller deletes and rewrites it) and drops nothing.
    """

    def __init__(self, cap: int, stride: int = 1, *, every_step: bool = False) -> None:
        self.cap = cap
        self.stride = stride
        self.steps: list[int] = []
        # A series fed every step (the scalars) keeps only the steps on its stride, plus the
        # newest one until a newer one comes: as train() adds to its History only the steps
        # that are due. Keeping every step would halve the spacing again at every overflow.
        self.every_step = every_step
        self.provisional = False

    def check(self, step: int, what: str) -> None:
        if self.steps and step < self.steps[-1]:
            raise ValueError(f"{what} at step {step} comes after step {self.steps[-1]}: steps must not decrease")

    def add(self, step: int) -> list[int]:
        """Record ``step``; return the steps thinned away."""
        if self.steps and self.steps[-1] == step:
            return []
        dropped = []
        if self.provisional:
            dropped.append(self.steps.pop())     # the previous newest, kept only as the newest
        self.provisional = self.every_step and step % self.stride != 0
        self.steps.append(step)
        if len(self.steps) <= self.cap:
            return dropped
        self.stride *= 2
        kept = [s for s in self.steps if s % self.stride == 0 or s == step]
        dropped += [s for s in self.steps if s % self.stride != 0 and s != step]
        self.steps = kept
        return dropped


# ----- encoding -----------------------------------------------------------------------------------
def _blob(a: np.ndarray | None, dtype: np.dtype) -> bytes | None:
    return None if a is None else np.ascontiguousarray(a, dtype=dtype).tobytes()


def _array(b: bytes | None, dtype: np.dtype) -> np.ndarray | None:
    return None if b is None else np.frombuffer(b, dtype=dtype)


def _real(x: float | None) -> float:
    return math.nan if x is None else x


def _meta_value(key: str, value: Any) -> Any:
    if not isinstance(key, str) or not key:
        raise TypeError(f"meta keys must be non-empty strings, got {key!r}")
    if key in _RESERVED:
        raise ValueError(f"meta key {key!r} is written by the run store itself; choose another name")
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise TypeError(f"meta[{key!r}] must be a str, int, float, bool or None, got {type(value).__name__}")
    return value


def _step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"a step must be a whole number >= 0, got {step!r}")
    return int(step)


# ----- writing ------------------------------------------------------------------------------------
class RunWriter:
    """Writes one run into ``run_dir/RUN_FILE``. The caller decides what to record and when to
    :meth:`commit`; each commit is one transaction, and what was committed survives the process.

    ``layers`` are the recorded layers (a snapshot refers to them by position); ``meta`` any
    plain values worth keeping with the run (``rank`` and ``world_size`` are shown by
    :func:`list_runs`). ``every`` is the caller's snapshot cadence in steps: the thinning starts
    from that stride, as a History's starts from ``Config.record_every``, so the steps kept stay
    evenly spaced and the caller can mirror them with ``Thinned(SNAPSHOT_CAP, stride=every)``.

    The run file is built under a temporary name and moved into place, so a reader never finds
    a half-made run. Use from one thread at a time.
    """

    def __init__(self, run_dir: str | os.PathLike, *, layers: Sequence[LayerInfo],
                 meta: Mapping[str, str | int | float | bool | None], overwrite: bool = False, every: int = 1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a whole number of steps >= 1, got {every!r}")
        given = {key: _meta_value(key, value) for key, value in meta.items()}
        self.path = Path(run_dir)
        self.file = self.path / RUN_FILE
        self._layers = list(layers)
        self._snapshots = _Thinning(SNAPSHOT_CAP, stride=every)
        self._scalars: dict[str, _Thinning] = {}
        self._strides_changed = False
        self._last_step: int | None = None
        self._edges: dict[str, np.ndarray] | None = None
        self._channels: dict[int, int] = {}     # a norm layer's array length, fixed by its first snapshot
        self._db: sqlite3.Connection | None = None
        self.path.mkdir(parents=True, exist_ok=True)
        if (self.file.exists() or self.file.is_symlink()) and not overwrite:
            raise FileExistsError(f"{self.file} already holds a run: choose another run_dir, "
                                  "or pass overwrite=True to replace it")
        now = time.time()
        stored = {**given, "format": FORMAT, "version": VERSION, "created": now, "updated": now,
                  "status": "running", "pid": os.getpid(), "hostname": socket.gethostname(),
                  "last_step": None, "snapshot_stride": every, "scalar_strides": {}}
        with self._writing():
            self._create(stored, overwrite)
            self._db = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA synchronous=NORMAL")

    def _create(self, meta: dict[str, Any], overwrite: bool) -> None:
        tmp = self.path / f".{RUN_FILE}.{os.getpid()}.new"
        for stale in _with_wal(tmp):
            stale.unlink(missing_ok=True)
        with contextlib.closing(sqlite3.connect(tmp, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")   # persistent: recorded in the file's header
            db.executescript(f"BEGIN;{_SCHEMA}COMMIT;")
            db.execute("BEGIN")
            db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            db.executemany("INSERT INTO layers VALUES (?, ?)",
                           [(i, json.dumps(dataclasses.asdict(info))) for i, info in enumerate(self._layers)])
            db.execute("COMMIT")
        # Closing the only connection checkpointed the WAL into the file and removed it. A stale
        # -wal next to the new file would be replayed onto it: remove the old run's first.
        if overwrite:
            for old in _with_wal(self.file)[1:]:
                old.unlink(missing_ok=True)
        os.replace(tmp, self.file)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as err:
            raise RunFileError(f"{self.file}: could not write the run ({err})") from err

    def _begin(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"the writer of {self.file} is closed")
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        return self._db

    def _saw(self, step: int) -> None:
        self._last_step = step if self._last_step is None else max(self._last_step, step)

    def update_layers(self, layers: Sequence[LayerInfo]) -> None:
        """Describe the run's layers anew (the same layers, in the same order): a lazy module
        learns its channels and gets gamma and beta at its first forward, which may come after
        the writer was made. Visible to readers opened after the next :meth:`commit`."""
        layers = list(layers)
        if [layer.name for layer in layers] != [layer.name for layer in self._layers]:
            raise ValueError("update_layers describes the run's layers again: the same names in the same order")
        changed = [(json.dumps(dataclasses.asdict(new)), i)
                   for i, (new, old) in enumerate(zip(layers, self._layers)) if new != old]
        if changed:
            with self._writing():
                self._begin().executemany("UPDATE layers SET info = ? WHERE idx = ?", changed)
        self._layers = layers

    def snapshot_due(self, step: int) -> bool:
        """Whether a snapshot of ``step`` would be kept at the current (thinned) cadence: the
        recorder arms its hooks only for those."""
        return step % self._snapshots.stride == 0

    @property
    def has_snapshots(self) -> bool:
        return bool(self._snapshots.steps)

    def set_edges(self, edges: Mapping[str, np.ndarray]) -> None:
        """Histogram bin edges per tap name, fixed for the run: once, before the first snapshot."""
        if self._edges is not None or self._snapshots.steps:
            raise ValueError("histogram edges are fixed for a run: set_edges is called once, before the first snapshot")
        fixed = {}
        for tap, e in edges.items():
            a = np.asarray(e, dtype=np.float32)
            if a.ndim != 1 or len(a) < 2 or not (np.diff(a) > 0).all():
                raise ValueError(f"edges[{tap!r}] must be at least two increasing numbers")
            fixed[str(tap)] = a
        with self._writing():
            self._begin().executemany("INSERT INTO edges VALUES (?, ?)",
                                      [(tap, _blob(a, _F32)) for tap, a in fixed.items()])
        self._edges = fixed

    def add_snapshot(self, snap: Snapshot) -> None:
        """Store one snapshot (replacing one of the same step if it is the newest); thin the
        snapshots past ``SNAPSHOT_CAP``. Visible to readers at the next :meth:`commit`."""
        step = _step(snap.step)
        self._snapshots.check(step, "a snapshot")
        taps = self._taps_row(step, snap.taps)
        norm_rows = [self._norm_row(step, layer, ns) for layer, ns in snap.norms.items()]
        with self._writing():
            db = self._begin()
            if self._snapshots.steps and self._snapshots.steps[-1] == step:
                dropped = [step]
            else:
                stride = self._snapshots.stride
                dropped = self._snapshots.add(step)
                self._strides_changed |= stride != self._snapshots.stride
            gone = [(s,) for s in dropped]
            for table in ("snapshots", "norms"):
                db.executemany(f"DELETE FROM {table} WHERE step = ?", gone)
            db.execute("INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?)", taps)
            db.executemany("INSERT INTO norms VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [r for r, _ in norm_rows])
        self._channels.update((row[1], size) for row, size in norm_rows if size is not None)
        self._saw(step)

    def _layer(self, layer: Any) -> int:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < len(self._layers):
            raise ValueError(f"layer index {layer!r} is not one of the run's {len(self._layers)} layers")
        return int(layer)

    def _taps_row(self, step: int, taps: Mapping[tuple[int, str], TapStats]) -> tuple:
        """A snapshot's row: its tap summaries packed, one BLOB per statistic."""
        keys = []
        for (layer, tap), st in taps.items():
            keys.append([self._layer(layer), tap])
            edges = (self._edges or {}).get(tap)
            if edges is None:
                raise ValueError(f"no histogram edges for tap {tap!r}: call set_edges with every tap before the first snapshot")
            if len(st.counts) != len(edges) - 1:
                raise ValueError(f"tap {tap!r} of layer {layer}: {len(st.counts)} counts for {len(edges) - 1} bins")
        stats = list(taps.values())
        if len({len(st.percentiles) for st in stats} | {len(st.unit_percentiles) for st in stats}) > 1:
            raise ValueError("every tap of a snapshot needs the same number of percentiles")
        p = len(stats[0].percentiles) if stats else 0
        return (step, json.dumps(keys),
                b"".join(_blob(st.counts, _I32) for st in stats),
                np.array([st.percentiles for st in stats], dtype=_F32).reshape(len(stats), p).tobytes(),
                np.array([st.unit_percentiles for st in stats], dtype=_F32).reshape(len(stats), p).tobytes(),
                np.array([(st.below, st.above, st.nonfinite, st.n) for st in stats], dtype=_I64).tobytes(),
                np.array([(st.mean, st.std, st.zero_frac) for st in stats], dtype=_F64).tobytes())

    def _norm_row(self, step: int, layer: Any, ns: NormStats) -> tuple[tuple, int | None]:
        """The row of one layer's norm state, and the length of its arrays (None without any)."""
        layer = self._layer(layer)
        arrays = [getattr(ns, name) for name in _NORM_ARRAYS]
        # A reader stacks a layer's arrays into (steps, C): one length per layer for the whole run.
        sizes = {int(np.size(a)) for a in arrays if a is not None}
        if layer in self._channels:
            sizes.add(self._channels[layer])
        if len(sizes) > 1:
            raise ValueError(f"layer {layer}'s per-channel arrays have lengths {sorted(sizes)}; "
                             "they must share one length for the whole run")
        nbt = ns.num_batches_tracked
        row = (step, layer, *[_blob(a, _F32) for a in arrays], int(ns.count), int(bool(ns.training)),
               int(bool(ns.frozen)), None if nbt is None else int(nbt), int(ns.samples))
        return row, (sizes.pop() if sizes else None)

    def add_scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Store named numbers of one step (``loss``, ``lr``, ...); each name is its own series,
        thinned past ``LOSS_CAP``. Visible to readers at the next :meth:`commit`."""
        step = _step(step)
        rows = []
        for name, value in values.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"scalar names must be non-empty strings, got {name!r}")
            if name in self._scalars:
                self._scalars[name].check(step, f"scalar {name!r}")
            rows.append((name, float(value)))
        with self._writing():
            db = self._begin()
            for name, value in rows:
                series = self._scalars.get(name)
                if series is None:
                    series = self._scalars[name] = _Thinning(LOSS_CAP, every_step=True)
                    self._strides_changed = True
                stride = series.stride
                dropped = series.add(step)
                self._strides_changed |= stride != series.stride
                db.executemany("DELETE FROM scalars WHERE name = ? AND step = ?", [(name, s) for s in dropped])
                db.execute("INSERT OR REPLACE INTO scalars VALUES (?, ?, ?)", (name, step, value))
        if rows:
            self._saw(step)

    def _put_meta(self, **values: Any) -> None:
        self._begin().executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  [(k, json.dumps(v)) for k, v in values.items()])

    def commit(self) -> None:
        """Make everything added since the last commit visible and durable, as one transaction."""
        if self._db is None:
            raise RuntimeError(f"the writer of {self.file} is closed")
        if not self._db.in_transaction:
            return
        with self._writing():
            meta: dict[str, Any] = {"updated": time.time(), "last_step": self._last_step}
            if self._strides_changed:
                meta["snapshot_stride"] = self._snapshots.stride
                meta["scalar_strides"] = {name: s.stride for name, s in self._scalars.items()}
            self._put_meta(**meta)
            self._db.execute("COMMIT")
        self._strides_changed = False

    def close(self, status: str = "finished") -> None:
        """Commit, mark the run ``status`` ("finished" or "failed") and close the file; a second
        call does nothing."""
        if status not in ("finished", "failed"):
            raise ValueError(f'status must be "finished" or "failed", got {status!r}')
        if self._db is None:
            return
        with self._writing():
            self._put_meta(status=status)
            self.commit()
            self._db.close()
        self._db = None

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Ctrl-C is how a user ends training early: the run is whole up to there, not failed.
        failed = exc_type is not None and not issubclass(exc_type, KeyboardInterrupt)
        self.close("failed" if failed else "finished")


def _with_wal(file: Path) -> list[Path]:
    return [file, file.with_name(file.name + "-wal"), file.with_name(file.name + "-shm")]


# ----- reading ------------------------------------------------------------------------------------
def _alive(pid: Any) -> bool:
    """Whether process ``pid`` of this host exists; True when that cannot be told."""
    if os.name != "posix" or isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return True  # os.kill(pid, 0) terminates the process on Windows; 0 and -1 mean groups
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's process
        pass
    # A killed writer that its parent has not reaped yet (started by subprocess.Popen without a
    # wait) is a zombie: os.kill still finds it, and its run said "running" for as long as the
    # parent lived. Linux gives its state after the command name in /proc/<pid>/stat: "pid (comm) Z".
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            head = f.read(100)      # the pid, a name of at most 15 bytes in parentheses, the state
    except OSError:                 # no /proc (macOS), or it has just gone
        return True
    state = head[head.rfind(b")") + 1:].split()[:1]
    return state not in ([b"Z"], [b"X"])


def _status(meta: Mapping[str, Any]) -> str:
    """The recorded status, except that a "running" run whose writer process has gone (on this
    host, where that can be checked) was "stopped": killed, or ended without closing the writer."""
    status = meta.get("status")
    if status == "running" and meta.get("hostname") == socket.gethostname() and not _alive(meta.get("pid")):
        return "stopped"
    return str(status)


def _problem(file: Path, err: sqlite3.Error) -> RunFileError:
    text = str(err)
    if "not a database" in text:
        return RunFileError(f"{file} is not a bnviz run: it is not a SQLite database (a text file, or damaged)")
    if "malformed" in text:
        return RunFileError(f"{file} is damaged ({text}): it may have been truncated or partly overwritten")
    return RunFileError(f"{file} cannot be read as a bnviz run ({text})")


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _truncation(file: Path) -> str | None:
    """Why ``file`` is shorter than its SQLite header says it is, or None.

    SQLite reads a file cut short without complaint until a query reaches a missing page, so a
    copy that lost its last pages opened as a run and failed later, at whichever read reached
    them. The header's page count (valid when its "version-valid-for" equals the change
    counter) tells at once. Not while a -wal file with frames is next to it: the run is being
    written, or was killed, and the WAL may hold pages the main file does not have yet. (A
    reader leaves an empty -wal behind: it holds no page.)
    """
    try:
        if os.path.getsize(_with_wal(file)[1]) > 0:
            return None
    except OSError:
        pass   # no -wal
    try:
        with open(file, "rb") as f:
            head = f.read(100)
        size = os.path.getsize(file)
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC) or head[92:96] != head[24:28]:
        return None
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    expected = page * int.from_bytes(head[28:32], "big")
    if size < expected:
        return (f"{file} is damaged: it holds {size} bytes where its header says {expected}; "
                "it was truncated (a partial copy or download?)")
    return None


def _check_format(file: Path, db: sqlite3.Connection) -> None:
    """Raise RunFileError, saying why, unless ``file`` is a bnviz run this code can read."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        # SQLite opens a file of a few bytes (shorter than its 100-byte header) as an empty
        # database: only a file that is empty or starts like SQLite is one.
        try:
            with open(file, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError:
            head = b""
        if head and head != _SQLITE_MAGIC:
            raise RunFileError(f"{file} is not a bnviz run: it is not a SQLite database (a text file, or damaged)")
        raise RunFileError(f"{file} is not a bnviz run: it is an empty SQLite database")
    if "meta" not in tables:
        raise RunFileError(f"{file} is not a bnviz run: it is a SQLite database of another program "
                           f"(tables: {', '.join(sorted(tables))})")
    try:
        meta = {key: json.loads(value) for key, value in db.execute("SELECT key, value FROM meta")}
    except (ValueError, TypeError):
        raise RunFileError(f"{file} is not a bnviz run: its meta table does not hold bnviz's JSON values") from None
    if meta.get("format") != FORMAT:
        raise RunFileError(f"{file} is not a bnviz run: it is a SQLite database of another program "
                           f"(format {meta.get('format')!r}, expected {FORMAT!r})")
    version = meta.get("version")
    if version != VERSION:
        newer = isinstance(version, int) and version > VERSION
        raise RunFileError(f"{file} is a bnviz run of format version {version!r}; this bnviz reads version {VERSION}"
                           + (": upgrade bnviz to open it" if newer else ""))
    missing = [t for t in _TABLES if t not in tables]
    if missing:
        raise RunFileError(f"{file} is a damaged bnviz run: tables {', '.join(missing)} are missing")
    columns = [row[1] for row in db.execute("PRAGMA table_info(norms)")]
    if columns != list(NORM_COLUMNS):
        raise RunFileError(f"{file} is a bnviz run whose norms table has other columns than this bnviz writes "
                           f"({', '.join(columns)}): record it again with this version")
    truncated = _truncation(file)
    if truncated:
        raise RunFileError(truncated)


def _checked_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` once the values the store wrote itself are of the kind it wrote: every reader
    indexes them, and a damaged row (or a foreign file posing as a run) raised KeyError,
    AttributeError or TypeError from deep inside a read instead of naming the file."""
    def whole(key: str, value: Any, least: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"meta {key!r} is {value!r}, not a whole number >= {least}")

    for key in ("created", "updated"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"meta {key!r} is {value!r}, not a time")
    whole("snapshot_stride", meta.get("snapshot_stride"), 1)
    if meta.get("last_step") is not None:
        whole("last_step", meta["last_step"], 0)
    strides = meta.get("scalar_strides")
    if not isinstance(strides, dict):
        raise ValueError(f"meta 'scalar_strides' is {strides!r}, not a mapping of names to strides")
    for name, stride in strides.items():
        whole(f"scalar_strides[{name!r}]", stride, 1)
    return meta


def _layer_info(file: Path, info: str) -> LayerInfo:
    try:
        return LayerInfo(**json.loads(info))
    except (ValueError, TypeError):
        raise RunFileError(f"{file} is a damaged bnviz run: a layer description is not readable ({info[:80]!r})") from None


def _unpack_taps(row: Sequence[Any], edges: Mapping[str, np.ndarray],
                 layouts: dict[str, tuple[list[tuple[int, str]], list[int]]]) -> dict[tuple[int, str], TapStats]:
    """A snapshot's tap summaries from its packed row (see the schema). The arrays are views of
    the row's BLOBs, and ``layouts`` keeps each tap list's keys and count offsets: every
    snapshot of a run usually has the same taps, so they are worked out once."""
    keys_json, counts, pct, unit_pct, totals, moments = row
    if keys_json not in layouts:
        keys = [(int(layer), str(tap)) for layer, tap in json.loads(keys_json)]
        missing = sorted({tap for _, tap in keys} - set(edges))
        if missing:
            raise ValueError(f"taps {', '.join(missing)} have no histogram edges")
        layouts[keys_json] = (keys, np.cumsum([0] + [len(edges[tap]) - 1 for _, tap in keys]).tolist())
    keys, offsets = layouts[keys_json]
    if not keys:
        return {}
    k = len(keys)
    counts_all = np.frombuffer(counts, dtype=_I32)
    if len(counts_all) != offsets[-1]:
        raise ValueError(f"{len(counts_all)} histogram counts for {offsets[-1]} bins")
    pct_all = np.frombuffer(pct, dtype=_F32).reshape(k, -1)
    unit_all = np.frombuffer(unit_pct, dtype=_F32).reshape(k, -1)
    below_above_nonfinite_n = np.frombuffer(totals, dtype=_I64).reshape(k, 4).tolist()
    mean_std_zeros = np.frombuffer(moments, dtype=_F64).reshape(k, 3).tolist()
    return {key: TapStats(counts=counts_all[offsets[i]:offsets[i + 1]], below=t[0], above=t[1], nonfinite=t[2],
                          percentiles=pct_all[i], unit_percentiles=unit_all[i], mean=m[0], std=m[1], zero_frac=m[2],
                          n=t[3])
            for i, (key, t, m) in enumerate(zip(keys, below_above_nonfinite_n, mean_std_zeros))}


def _stack(blobs: list[bytes | None], channels: int) -> np.ndarray:
    """(S, C) float32 from one array per step; NaN rows where a step has none."""
    if blobs and all(b is not None for b in blobs):
        return np.frombuffer(b"".join(blobs), dtype=_F32).astype(np.float32).reshape(len(blobs), -1)
    present = [b for b in blobs if b is not None]
    c = len(present[0]) // _F32.itemsize if present else channels
    out = np.full((len(blobs), c), np.nan, dtype=np.float32)
    for i, b in enumerate(blobs):
        if b is not None:
            out[i] = np.frombuffer(b, dtype=_F32)
    return out


class StoredRun:
    """A recorded run, read-only; made by :func:`open_run`.

    Every property and method reads the latest commit, in one read transaction of its own, so a
    run that is still being written can be followed by asking again, and what one call returns is
    consistent in itself (no step half-written). No file handle is held between calls.
    """

    def __init__(self, file: Path):
        self.file = Path(file)
        self.path = self.file.parent
        with self._read(check=True) as db:
            self.layers: list[LayerInfo] = [_layer_info(self.file, info)
                                             for _, info in db.execute("SELECT idx, info FROM layers ORDER BY idx")]
        self.norm_layers: list[str] = [layer.name for layer in self.layers if layer.family is not None]
        self._index = {layer.name: i for i, layer in enumerate(self.layers)}
        self._edges: dict[str, np.ndarray] = {}

    @contextlib.contextmanager
    def _decoding(self) -> Iterator[None]:
        """Decoding what a read returned: a value of the wrong type or form is a damaged file."""
        try:
            yield
        except _DAMAGE as err:
            raise RunFileError(f"{self.file} is a damaged bnviz run ({err})") from err

    @contextlib.contextmanager
    def _read(self, check: bool = False) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(f"{self.file.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                                 isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise _problem(self.file, err) from err
        try:
            db.execute("BEGIN")
            if check:
                _check_format(self.file, db)
            yield db
        except sqlite3.Error as err:
            raise _problem(self.file, err) from err
        except RunFileError:
            raise
        except _DAMAGE as err:  # a BLOB, JSON or column value of the wrong size, type or form
            raise RunFileError(f"{self.file} is a damaged bnviz run ({err})") from err
        finally:
            db.close()

    def _meta(self, db: sqlite3.Connection) -> dict[str, Any]:
        meta = _checked_meta({key: json.loads(value) for key, value in db.execute("SELECT key, value FROM meta")})
        meta["status"] = _status(meta)
        return meta

    @property
    def meta(self) -> dict[str, Any]:
        """What the writer was given, plus format, version, created and updated (unix time),
        status (as :attr:`status`), pid, hostname, last_step and the thinning strides."""
        with self._read() as db:
            return self._meta(db)

    @property
    def status(self) -> str:
        """One of "running", "finished", "failed" and "stopped": the writer process has gone
        without closing the run (killed; told only on the host that wrote it, by its pid)."""
        return self.meta["status"]

    @property
    def snapshot_steps(self) -> np.ndarray:
        """The steps of the snapshots kept, ascending (int64)."""
        with self._read() as db:
            return np.array([s for (s,) in db.execute("SELECT step FROM snapshots ORDER BY step")], dtype=np.int64)

    @property
    def scalar_names(self) -> list[str]:
        """Names of the scalar series, sorted."""
        return sorted(self.meta["scalar_strides"])

    def _read_edges(self, db: sqlite3.Connection) -> dict[str, np.ndarray]:
        # Fixed for the run, but a live run may have been opened before its writer set them.
        if not self._edges:
            self._edges = {tap: np.frombuffer(e, dtype=_F32).astype(np.float32)
                           for tap, e in db.execute("SELECT tap, edges FROM edges")}
        return dict(self._edges)

    @property
    def edges(self) -> dict[str, np.ndarray]:
        """Histogram bin edges per tap (float32)."""
        with self._read() as db:
            return self._read_edges(db)

    def _norm_layer(self, name: str) -> int:
        i = self._index.get(name)
        if i is None or self.layers[i].family is None:
            why = "is not a recorded layer" if i is None else "has no normalization module"
            raise KeyError(f"{name!r} {why} in {self.file}; its normalization layers are: "
                           f"{', '.join(self.norm_layers) or '(none)'}")
        return i

    def _norm_columns(self, name: str, columns: Sequence[str]) -> tuple[np.ndarray, list[list[Any]]]:
        layer = self._norm_layer(name)
        with self._read() as db:
            rows = db.execute(f"SELECT step, {', '.join(columns)} FROM norms WHERE layer = ? ORDER BY step",
                              (layer,)).fetchall()
            # decoded inside the read: a damaged value raises RunFileError naming the file
            steps = np.array([r[0] for r in rows], dtype=np.int64)
        return steps, [[r[k] for r in rows] for k in range(1, len(columns) + 1)]

    def _norm_arrays(self, name: str, columns: tuple[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        steps, (a, b) = self._norm_columns(name, columns)
        channels = self.layers[self._index[name]].channels
        with self._decoding():   # TypeError too, not ValueError alone: a damaged BLOB can read back as TEXT
            return steps, _stack(a, channels), _stack(b, channels)

    NORM_ARRAYS = ("batch_mean", "batch_var", "running_mean", "running_var", "weight", "bias")

    def has(self, name: str, array: str) -> bool:
        """Whether norm layer ``name`` has ``array`` (one of :attr:`NORM_ARRAYS`) at any recorded
        step. The arrays read as NaN where a layer has none (RMSNorm has no bias; LayerNorm no
        running statistics): this tells that apart from a NaN the layer really held."""
        if array not in self.NORM_ARRAYS:
            raise ValueError(f"no per-channel array {array!r}; there are: {', '.join(self.NORM_ARRAYS)}")
        layer = self._norm_layer(name)
        with self._read() as db:
            return db.execute(f"SELECT 1 FROM norms WHERE layer = ? AND {array} IS NOT NULL LIMIT 1",
                              (layer,)).fetchone() is not None

    def batch_stats(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps (S,), batch mean (S, C), biased batch variance (S, C)) of norm layer ``name``;
        float32, NaN at steps where it was not recorded."""
        return self._norm_arrays(name, ("batch_mean", "batch_var"))

    def running_stats(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, running mean (S, C), running variance (S, C), unbiased as torch stores it)."""
        return self._norm_arrays(name, ("running_mean", "running_var"))

    def params(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, weight gamma (S, C), bias beta (S, C)); NaN for a layer without them. For a
        LayerNorm / RMSNorm over several axes (``normalized_shape`` (C, H, W)) the channels are
        its first axis, and gamma / beta their mean over the other axes."""
        return self._norm_arrays(name, ("weight", "bias"))

    def layer_state(self, name: str) -> dict[str, np.ndarray]:
        """How norm layer ``name`` ran at each recorded step, (S,) each: steps, count (values per
        statistic), samples (N, the batch size), training, frozen, num_batches_tracked (float64,
        NaN where the layer has none)."""
        steps, (count, samples, training, frozen, nbt) = self._norm_columns(
            name, ("count", "samples", "training", "frozen", "num_batches_tracked"))
        with self._decoding():
            return {"steps": steps, "count": np.array(count, dtype=np.int64),
                    "samples": np.array(samples, dtype=np.int64), "training": np.array(training, dtype=bool),
                    "frozen": np.array(frozen, dtype=bool),
                    "num_batches_tracked": np.array([_real(n) for n in nbt], dtype=np.float64)}

    def scalars(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the scalar series ``name``, float64."""
        with self._read() as db:
            names = sorted(self._meta(db)["scalar_strides"])
            rows = None
            if name in names:
                rows = db.execute("SELECT step, value FROM scalars WHERE name = ? ORDER BY step", (name,)).fetchall()
                # decoded inside the read: a damaged value raises RunFileError naming the file
                out = (np.array([s for s, _ in rows], dtype=np.int64),
                       np.array([_real(v) for _, v in rows], dtype=np.float64))
        # The unknown name is the caller's mistake, not damage: raised outside the read, which
        # reports any KeyError inside it as a damaged file.
        if rows is None:
            raise KeyError(f"no scalar {name!r} in {self.file}; it has: {', '.join(names) or '(none)'}")
        return out

    def history(self) -> History:
        """The run as the in-memory :class:`~bnviz.record.History` every figure draws from
        (``config`` None: bnviz did not train it). Losses come from the scalar "loss", with NaN
        batch accuracy; evaluations are empty."""
        with self._read() as db:
            meta = self._meta(db)
            edges = self._read_edges(db)
            layouts: dict[str, tuple[list[tuple[int, str]], list[int]]] = {}
            snaps: dict[int, tuple[dict, dict]] = {}
            for step, *packed in db.execute("SELECT * FROM snapshots ORDER BY step"):
                snaps[step] = (_unpack_taps(packed, edges, layouts), {})
            # rowid order is insertion order: the snapshot's own order of layers
            for (step, layer, *arrays, count, training, frozen, nbt, samples) in db.execute(
                    "SELECT * FROM norms ORDER BY rowid"):
                snaps[step][1][layer] = NormStats(*[_array(a, _F32) for a in arrays], count=count,
                                                  training=bool(training), frozen=bool(frozen), num_batches_tracked=nbt,
                                                  samples=samples)
            losses = db.execute("SELECT step, value FROM scalars WHERE name = 'loss' ORDER BY step").fetchall()
        with self._decoding():
            snapshots: Thinned[Snapshot] = Thinned(SNAPSHOT_CAP, stride=meta["snapshot_stride"], steps=list(snaps),
                                                   items=[Snapshot(s, taps, norms) for s, (taps, norms) in snaps.items()])
            loss_series: Thinned[tuple[float, float]] = Thinned(
                LOSS_CAP, stride=meta["scalar_strides"].get("loss", 1), steps=[s for s, _ in losses],
                items=[(_real(v), math.nan) for _, v in losses])
        return History(config=None, layer_names=[layer.name for layer in self.layers], edges=edges,
                       snapshots=snapshots, losses=loss_series, evals=Thinned(EVAL_CAP),
                       elapsed_s=float(meta["updated"]) - float(meta["created"]))

    def __repr__(self) -> str:
        return f"<bnviz.StoredRun {self.path} ({len(self.layers)} layers)>"


def _rank_dirs(path: Path) -> dict[int, Path]:
    """The per-rank runs of a torch.distributed job's folder: rank -> run file."""
    found = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            m = _RANK_DIR.fullmatch(entry.name)
            if m and entry.is_dir() and (Path(entry.path) / RUN_FILE).is_file():
                found[int(m.group(1))] = Path(entry.path) / RUN_FILE
    return found


def _run_file(path: Path, rank: int | None) -> Path:
    """The run file ``open_run(path, rank)`` reads."""
    if path.is_file():
        if rank is not None:
            raise ValueError(f"rank={rank} picks a rank folder of a distributed job's run; {path} is a run file")
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no bnviz run at {path}: it does not exist")
    if rank is None and (path / RUN_FILE).is_file():
        return path / RUN_FILE
    ranks = _rank_dirs(path)
    wanted = 0 if rank is None else rank
    if wanted in ranks:
        return ranks[wanted]
    if ranks:
        raise FileNotFoundError(f"no rank-{wanted} run in {path}; its ranks: {', '.join(map(str, sorted(ranks)))}")
    raise FileNotFoundError(f"no bnviz run in {path}: it holds no {RUN_FILE} (nor rank-N folders of one)")


def open_run(run_dir: str | os.PathLike, rank: int | None = None) -> StoredRun:
    """Open a recorded run for reading: its folder or its ``RUN_FILE``. A distributed job's folder
    holds one run per process in ``rank-0``, ``rank-1``, ...: rank 0 unless ``rank`` is given.

    Raises FileNotFoundError where there is no run, :class:`RunFileError` for a file that is not a
    readable bnviz run.
    """
    return StoredRun(_run_file(Path(run_dir), rank))


@dataclass(frozen=True)
class RunSummary:
    """One line of :func:`list_runs`."""

    name: str                 # folder relative to the root, "/"-separated ("." for the root itself)
    path: Path                # the run folder
    status: str               # as StoredRun.status; "damaged" when the file cannot be read
    last_step: int | None     # the newest step recorded (snapshot or scalar); None before any
    layers: int               # number of recorded layers
    updated: float            # unix time of the last commit (file time for a damaged run)
    rank: int                 # the writer's meta "rank" and "world_size": a distributed job
    world_size: int           # writes one run per process
    error: str | None = None  # why a damaged run cannot be read


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _run_name(file: Path, root: Path) -> str:
    return file.parent.relative_to(root).as_posix()


def _summary(file: Path, root: Path) -> RunSummary:
    name = _run_name(file, root)
    try:
        if not _inside(file.resolve(), root.resolve()):
            raise RunFileError(f"{file} links to {file.resolve()}, outside {root}")
        run = StoredRun(file)
        meta = run.meta
        return RunSummary(name=name, path=file.parent, status=meta["status"], last_step=meta.get("last_step"),
                          layers=len(run.layers), updated=float(meta["updated"]), rank=int(meta.get("rank", 0)),
                          world_size=int(meta.get("world_size", 1)))
    except (RunFileError, OSError, KeyError, TypeError, ValueError) as err:
        try:
            updated = file.stat().st_mtime
        except OSError:
            updated = 0.0
        return RunSummary(name=name, path=file.parent, status="damaged", last_step=None, layers=0,
                          updated=updated, rank=0, world_size=1, error=str(err))


def list_runs(root: str | os.PathLike) -> list[RunSummary]:
    """Every run under ``root`` (``root`` itself and folders up to ``MAX_DEPTH`` levels below;
    symlinked folders are not followed), newest first. A run that cannot be read is listed with
    its error instead of raising."""
    root = Path(root)
    return sorted((_summary(f, root) for f in _run_files(root)), key=lambda r: (-r.updated, r.name))


def run_names(root: str | os.PathLike) -> tuple[str, ...]:
    """The names :func:`list_runs` gives the runs under ``root``, sorted, found without opening a
    run file: what a page open on the folder compares every few seconds to notice a run that
    started there, or one deleted or renamed."""
    root = Path(root)
    return tuple(sorted(_run_name(f, root) for f in _run_files(root)))


def _run_files(root: Path) -> list[Path]:
    """The run files under ``root``: its own and those of folders up to ``MAX_DEPTH`` levels
    below, symlinked folders not followed."""
    files: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        if (folder / RUN_FILE).is_file():
            files.append(folder / RUN_FILE)
        if depth == MAX_DEPTH:
            return
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                walk(Path(entry.path), depth + 1)

    walk(root, 0)
    return files


def resolve_run(root: str | os.PathLike, name: str) -> Path:
    """The run folder a name from a URL refers to, checked to lie inside ``root``.

    ``name`` is a relative "/"-separated path as :func:`list_runs` gives it; a name with "..",
    an absolute path, a backslash, or one that resolves (symlinks followed) outside ``root`` is
    refused, as is one that holds no run: ValueError saying which.
    """
    base = Path(root).resolve()
    if not isinstance(name, str) or not name.strip():
        raise ValueError("no run name given")
    if "\x00" in name or "\\" in name:
        raise ValueError(f"run name {name!r} holds a character a run name cannot have (NUL or backslash)")
    pure = PurePosixPath(name)
    if pure.is_absolute() or PureWindowsPath(name).drive:
        raise ValueError(f"run name {name!r} is an absolute path; run names are relative to the runs folder {base}")
    if ".." in pure.parts:
        raise ValueError(f"run name {name!r} climbs out with '..'; run names stay inside the runs folder {base}")
    folder = (base / pure).resolve()
    if not _inside(folder, base):
        raise ValueError(f"run name {name!r} leads to {folder}, outside the runs folder {base}")
    try:
        file = _run_file(folder, None) if folder.is_dir() else None
    except FileNotFoundError:
        file = None
    if file is None:
        raise ValueError(f"no run named {name!r} in the runs folder {base}")
    if not _inside(file.resolve(), base):
        raise ValueError(f"run {name!r}'s file leads to {file.resolve()}, outside the runs folder {base}")
    return folder
