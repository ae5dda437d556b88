"""What a training run keeps: compact numbers about the tensors, never the tensors themselves.

A snapshot of one tap (a layer's pre-activation, BN output, ...) at one step is a histogram on
fixed bin edges, a handful of percentiles, its mean/std and its fraction of exact zeros: a few
hundred bytes whatever the batch or layer size. Snapshots are thinned as a run grows (every other
one dropped and the cadence doubled, the newest always kept), so a 50,000-step run holds no more
than a 1,000-step one.

Statistics are computed in numpy from one sort of the tapped values: on these CPUs numpy sorts a
6,400-value float32 array ~10x faster than ``torch.sort``, and every number we keep (counts,
percentiles, zeros) follows from the sorted array by ``searchsorted`` and indexing.
"""
from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Iterator, Sequence, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

from .config import Config

# Tap points of a layer, in the order a tensor meets them (norm ones exist only with a norm).
TAPS = ("pre_activation", "norm_input", "norm_output", "post_activation", "output")
TAP_LABELS = {
    "pre_activation": "pre-activation (input of the nonlinearity)",
    "norm_input": "normalization input",
    "norm_output": "normalization output",
    "post_activation": "post-activation (output of the nonlinearity)",
    "output": "layer output (input of the next layer)",
}
# 15/50/85 are Ioffe & Szegedy's Figure 1; 0/7/16/31/50/69/84/93/100 are TensorBoard's
# distribution bands (the normal's +-0.5, 1, 1.5 sigma and the extremes). Kept as one sorted set.
IOFFE_PERCENTILES = (15, 50, 85)
TENSORBOARD_PERCENTILES = (0, 7, 16, 31, 50, 69, 84, 93, 100)
PERCENTILES = tuple(sorted(set(IOFFE_PERCENTILES) | set(TENSORBOARD_PERCENTILES)))

_WIDE = np.linspace(-8.0, 8.0, 161, dtype=np.float32)


def bin_edges(tap: str, config: Config) -> np.ndarray:
    """Fixed histogram edges for one tap point, chosen from the activation's range.

    Fixed (not per-snapshot) so histograms of different steps and of the with/without-BN runs
    are directly comparable; values outside are counted as ``below``/``above``, never dropped.
    """
    ends_in_activation = not (config.has_norm and config.placement == "after")
    if not (tap == "post_activation" or (tap == "output" and ends_in_activation)):
        return _WIDE
    lo, hi = {"relu": (0.0, 5.0), "sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}[config.activation]
    if tap == "output" and config.dropout > 0 and config.dropout_position == "after_activation":
        hi = hi / (1.0 - config.dropout)  # inverted dropout scales kept values by 1/keep
        lo = lo / (1.0 - config.dropout)
    return np.linspace(lo, hi, 101, dtype=np.float32)


@dataclass(frozen=True)
class TapStats:
    """Summary of all values at one tap in one forward pass (all samples, all units)."""

    counts: np.ndarray          # int32, one per bin of the tap's edges; bins [e_i, e_i+1), last closed
    below: int                  # values under the first edge
    above: int                  # values over the last edge
    nonfinite: int              # NaN / inf values (a diverging run)
    percentiles: np.ndarray     # float32 at PERCENTILES, over all finite values (numpy "linear")
    unit_percentiles: np.ndarray  # float32 at PERCENTILES for unit/channel 0 alone, over the batch
    mean: float
    std: float                  # population standard deviation (ddof = 0)
    zero_frac: float            # fraction of values exactly 0.0 (dead ReLUs)
    n: int                      # number of values summarised


@functools.lru_cache(maxsize=256)
def _percentile_positions(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where numpy's "linear" percentiles of ``n`` sorted values fall: lower and upper index and
    the weight of the upper one."""
    pos = np.asarray(PERCENTILES, dtype=np.float64) / 100.0 * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    return lo, np.minimum(lo + 1, n - 1), pos - lo


def _sorted_percentiles(s: np.ndarray, start: np.ndarray, n: np.ndarray, rows: np.ndarray | None = None,
                        relu: np.ndarray | None = None) -> np.ndarray:
    """numpy's default ("linear") percentiles of each row of the row-sorted ``s`` (k, m), over the
    ``n[i]`` values from column ``start[i]`` on (a sorted row's finite block): (k, P) float32.

    With ``rows``: percentile i is of row ``rows[i]`` (``start``, ``n`` and ``relu`` given per
    percentile), of its ReLU where ``relu[i]``: a ReLU's sorted values are the ReLU of its input's
    sorted values, so its percentiles interpolate between the ReLU of the input's values."""
    if rows is None:
        rows = np.arange(len(s))
    if len(rows) and (start == 0).all() and (n == s.shape[1]).all():  # every value finite: the usual case
        groups: list[tuple[int, int, Any]] = [(0, s.shape[1], slice(None))]
    else:  # one pair unless values are not finite
        groups = [(first, size, np.flatnonzero((start == first) & (n == size)))
                  for first, size in set(zip(start.tolist(), n.tolist())) if size]
    out = np.full((len(rows), len(PERCENTILES)), np.nan, dtype=np.float32)
    for first, size, sel in groups:
        lo, hi, frac = _percentile_positions(size)
        source = rows[sel, None]
        a, b = s[source, first + lo], s[source, first + hi]
        if relu is not None:
            np.maximum(a, 0, out=a, where=relu[sel, None])
            np.maximum(b, 0, out=b, where=relu[sel, None])
        a = a.astype(np.float64)
        out[sel] = (a + (b.astype(np.float64) - a) * frac).astype(np.float32)
    return out


def _finite_block(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each sorted row's finite values start and how many there are (numpy sorts -inf
    first, +inf and NaN last; so a row whose ends are finite is finite throughout)."""
    k, m = s.shape
    if m == 0 or (np.isfinite(s[:, 0]).all() and np.isfinite(s[:, -1]).all()):
        return np.zeros(k, dtype=np.int64), np.full(k, m, dtype=np.int64)
    return np.count_nonzero(s == -np.inf, axis=1), np.count_nonzero(np.isfinite(s), axis=1)


def tap_stats(x: torch.Tensor, edges: np.ndarray) -> TapStats:
    """Summarise a tapped tensor of shape (N, C, ...) on the fixed ``edges``."""
    return tap_stats_many([x], edges)[0]


def tap_stats_many(tensors: Sequence[torch.Tensor], edges: np.ndarray | Sequence[np.ndarray]) -> list[TapStats]:
    """:func:`tap_stats` of several tensors of one shape, computed together; ``edges`` is one
    array for all of them or one per tensor."""
    if not tensors:
        return []
    per_tensor = edges if isinstance(edges, (list, tuple)) else [edges] * len(tensors)
    return summarize_sorted(*sorted_rows(tensors), per_tensor)


class Scratch:
    """Work space kept between summaries. A fresh array of a flush's size (1.5 MB for the default
    run) is new memory each time, and its first write costs a page fault per 4 KB: about as long
    as the arithmetic done in it. Up to ``LIMIT`` bytes are kept; :meth:`release` hands them on
    to a Scratch made later (a run's recorder to the next run's), ``SPARE`` of them at most."""

    LIMIT = 8 << 20
    SPARE = 2
    _spare: list[np.ndarray] = []
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.space = np.empty(0, dtype=np.uint8)

    def take(self, n: int, dtype: np.dtype | type = np.float64) -> np.ndarray:
        """``n`` values of ``dtype`` (contents undefined), valid until the next call."""
        size = n * np.dtype(dtype).itemsize
        if size > len(self.space):
            if size > self.LIMIT:
                return np.empty(n, dtype=dtype)
            self.space = self._spare_of(size)
        return self.space[:size].view(dtype)

    def release(self) -> None:
        """Hand the space on; this Scratch starts empty again."""
        with self._lock:
            if len(self.space) and len(self._spare) < self.SPARE:
                self._spare.append(self.space)
        self.space = np.empty(0, dtype=np.uint8)

    def _spare_of(self, size: int) -> np.ndarray:
        with self._lock:
            fits = [i for i, space in enumerate(self._spare) if len(space) >= size]
            if fits:
                return self._spare.pop(min(fits, key=lambda i: len(self._spare[i])))   # the smallest that fits
        # with room to spare: the last flush of a run holds a pass or two more than the others
        return np.empty(min(size + size // 4, self.LIMIT), dtype=np.uint8)


def sorted_rows(tensors: Sequence[torch.Tensor], scratch: Scratch | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The values of each tensor (all of one shape (N, C, ...)) sorted, one row each ((k, m));
    and the same rows for unit (channel) 0 alone, across the batch and any spatial positions.
    ``scratch``: where to put the rows, kept by a caller that sorts again and again."""
    import torch  # here: bnviz.store reads runs through this module without importing torch
    k = len(tensors)
    shape = tuple(tensors[0].shape)
    dtype = tensors[0].detach()[:0].numpy().dtype
    # Without a caller's scratch, new memory: a Scratch made here would take a spare space from
    # the pool kept for the recorders and never hand it back.
    n = k * math.prod(shape)
    rows = (scratch.take(n, dtype) if scratch is not None else np.empty(n, dtype=dtype)).reshape(k, *shape)
    torch.stack([t.detach() for t in tensors], out=torch.from_numpy(rows))
    unit = np.sort((rows[:, :, 0] if rows.ndim > 2 else rows).reshape(k, -1), axis=1)
    s = rows.reshape(k, -1)
    s.sort(axis=1)
    return s, unit


def summarize_sorted(s: np.ndarray, unit: np.ndarray, edges: Sequence[np.ndarray],
                     rows: Sequence[int] | None = None, relu: Sequence[bool] | None = None,
                     scratch: Scratch | None = None) -> list[TapStats]:
    """The :class:`TapStats` of each row of the row-sorted ``s`` (k, m), with ``unit`` (k, u) the
    sorted values of its unit 0 and ``edges[i]`` row i's histogram edges. With ``rows``: stats i
    are of row ``rows[i]`` on ``edges[i]``, or of that row's ReLU where ``relu[i]``.

    A ReLU's output needs no row of its own (no copy, no sort): ReLU is elementwise and
    non-decreasing, so its output, sorted, is the ReLU of its sorted input (-inf becomes 0, NaN
    stays NaN). Values below an edge above 0 are those of the input; none lie below an edge at or
    below 0; the exact zeros are the input's values up to 0; its sums are those of the input's
    values above 0.

    Each statistic is one numpy call for all rows rather than one per row: a snapshot summarises
    ~6 tensors of 6,400 values, and numpy's per-call overhead, not the arithmetic, was most of its
    cost. ``scratch``: where to work in float64, kept by a caller that summarises again and again.
    """
    k, m = s.shape
    if not len(edges):
        return []
    rows = np.arange(k) if rows is None else np.asarray(rows, dtype=np.intp)
    relu = np.zeros(len(rows), dtype=bool) if relu is None else np.asarray(relu, dtype=bool)
    start, n = _finite_block(s)
    end = start + n
    # Each summary's finite block: a ReLU's starts at 0 and also holds the input's -inf (now 0).
    first, size = np.where(relu, 0, start[rows]), np.where(relu, end[rows], n[rows])
    # Bin j holds [e_j, e_j+1), the last bin is closed: counts from where the edges fall in the
    # sorted values (-inf sorts first, so it is taken off "below"; NaN and +inf sort last). The
    # exact zeros (dead ReLUs) are found the same way. Rows that share edges are done together,
    # and each row is searched once for every edges' values.
    by_edges: dict[int, list[int]] = {}
    for i, e in enumerate(edges):
        by_edges.setdefault(id(e), []).append(i)
    union, looked_up = _union_queries([edges[group[0]] for group in by_edges.values()], s.dtype)
    found = np.stack([row.searchsorted(union) for row in s]) if k else np.empty((0, len(union)), np.int64)
    counts: list[np.ndarray] = [None] * len(rows)  # type: ignore[list-item]
    below, last, zeros = (np.empty(len(rows), np.int64) for _ in range(3))
    for members, (where, bins, above_zero) in zip(by_edges.values(), looked_up):
        group = np.array(members)
        left = found[rows[group][:, None], where] - first[group, None]
        derived = relu[group]
        if derived.any():   # a ReLU's: nothing lies below an edge at or below 0
            left[derived] *= above_zero
        c = (left[:, 1:bins + 1] - left[:, :bins]).astype(np.int32)   # left[bins]: values <= the last edge
        for i, row in zip(members, c):
            counts[i] = row
        below[group], last[group] = left[:, 0], left[:, bins]
        zeros[group] = left[:, bins + 2] - left[:, bins + 1]
    above, nonfinite = size - last, m - size
    where, bins, _ = looked_up[0]
    positive = found[:, where[bins + 2]]   # where each row's values above 0 start (any edges' search of them)
    # Sums in float64 over each row's finite block cut at 0, [start, positive) and [positive, end):
    # a row's are both parts', its ReLU's the second's. One reduceat per sum for every row (a
    # trailing 0 makes an index at the very end valid; a part left empty is 0).
    f = scratch.take(k * m + 1) if scratch is not None else np.empty(k * m + 1)   # (see sorted_rows)
    f[-1] = 0.0
    np.copyto(f[:-1].reshape(k, m), s)
    at = (np.arange(k) * m)[:, None] + np.stack([start, positive, end], axis=1)
    cut = at.ravel()
    filled = at[:, :2] < at[:, 1:]
    with np.errstate(invalid="ignore", over="ignore"):   # what lies between two blocks (inf, NaN) is left out
        sums = np.where(filled, np.add.reduceat(f, cut).reshape(k, 3)[:, :2], 0.0)
        np.multiply(f, f, out=f)
        squares = np.where(filled, np.add.reduceat(f, cut).reshape(k, 3)[:, :2], 0.0)
    total = np.where(relu, sums[rows, 1], sums[rows, 0] + sums[rows, 1])
    square = np.where(relu, squares[rows, 1], squares[rows, 0] + squares[rows, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(size > 0, total / size, np.nan)
        std = np.where(size > 0, np.sqrt(np.maximum(square / size - mean * mean, 0.0)), np.nan)
        zero_frac = np.where(size > 0, zeros / np.maximum(size, 1), np.nan)
    derived = relu if relu.any() else None
    percentiles = _sorted_percentiles(s, first, size, rows, derived)
    ustart, un = _finite_block(unit)
    unit_percentiles = _sorted_percentiles(unit, np.where(relu, 0, ustart[rows]),
                                           np.where(relu, (ustart + un)[rows], un[rows]), rows, derived)
    return [TapStats(counts=counts[i], below=b, above=a, nonfinite=nf, percentiles=percentiles[i],
                     unit_percentiles=unit_percentiles[i], mean=mu, std=sd, zero_frac=z, n=count)
            for i, (b, a, nf, mu, sd, z, count) in enumerate(zip(
                below.tolist(), above.tolist(), nonfinite.tolist(), mean.tolist(), std.tolist(),
                zero_frac.tolist(), size.tolist()))]


_QUERIES: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, int, np.ndarray]] = {}


def _queries(edges: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, int, np.ndarray]:
    """What to look up (left side) in a sorted row, and the number of bins: where each bin
    starts (every edge but the last), the next value above the last edge (the last bin is
    closed), then 0 and the next value above 0 (the exact zeros lie between). In a ``dtype`` row
    nothing lies between a value and the next one, so a left-side search of the next value is a
    right-side search of the value itself: one search per row instead of two. Also which of them
    are not at or below 0 (in a ReLU's output nothing lies below those that are). (A tap's edges
    are fixed for a run: built once per edges array.)"""
    hit = _QUERIES.get((id(edges), dtype.num))
    if hit is None or hit[0] is not edges:  # an id can be reused once its array is gone
        if len(_QUERIES) > 256:  # a handful per run; bounded all the same
            _QUERIES.clear()
        e = edges.astype(dtype)
        above = np.nextafter(np.array([e[-1], 0], dtype=dtype), np.array(np.inf, dtype=dtype))
        queries = np.concatenate([e[:-1], above[:1], np.zeros(1, dtype), above[1:]])
        hit = (edges, queries, len(e) - 1, ~(queries <= 0))
        _QUERIES[(id(edges), dtype.num)] = hit
    return hit[1], hit[2], hit[3]


_UNIONS: dict[tuple[tuple[int, ...], int], tuple[tuple[np.ndarray, ...], np.ndarray, list]] = {}


def _union_queries(edges: Sequence[np.ndarray],
                   dtype: np.dtype) -> tuple[np.ndarray, list[tuple[np.ndarray, int, np.ndarray]]]:
    """The :func:`_queries` of every one of ``edges`` in one sorted array, to search each row once
    for all of them (a snapshot's rows are searched for two edges: about half the calls); and for
    each edges, where its queries are in it, its number of bins and which are not at or below 0."""
    key = (tuple(id(e) for e in edges), dtype.num)
    hit = _UNIONS.get(key)
    if hit is None or any(a is not b for a, b in zip(hit[0], edges)):  # ids can be reused, as in _queries
        if len(_UNIONS) > 256:
            _UNIONS.clear()
        parts = [_queries(e, dtype) for e in edges]
        union = np.unique(np.concatenate([queries for queries, _, _ in parts]))
        where = [(np.searchsorted(union, queries), bins, above) for queries, bins, above in parts]
        hit = (tuple(edges), union, where)
        _UNIONS[key] = hit
    return hit[1], hit[2]


@dataclass(frozen=True)
class NormStats:
    """Per-channel state of one normalization layer at one step (float32 arrays, length C)."""

    batch_mean: np.ndarray | None    # of the layer's input over the batch (and spatial axes)
    batch_var: np.ndarray | None     # biased, as used to normalize
    running_mean: np.ndarray | None  # after this step's update
    running_var: np.ndarray | None   # unbiased, as torch stores it
    weight: np.ndarray | None        # gamma
    bias: np.ndarray | None          # beta
    # How the layer ran in that forward (what the BN doctor checks): values per channel the batch
    # statistics were taken over (N for (N, C), N*H*W for (N, C, H, W)); the module's training
    # flag; whether it has parameters and none of them requires grad; torch's batch counter;
    # the batch size.
    count: int = 0
    training: bool = True
    frozen: bool = False
    num_batches_tracked: int | None = None
    samples: int = 0                 # N: samples in the batch (a batch of one is BN's own fault)


# Families of normalization layers, by what they average over (see bnviz.norms.norm_family).
NORM_FAMILIES = ("batch", "layer", "group", "instance", "rms")


@dataclass(frozen=True)
class LayerInfo:
    """A recorded layer as the recorder found it: a normalization module (by its name in
    ``model.named_modules()``) with the activation module that follows it, or, for bnviz's own
    networks, a hidden block."""

    name: str                         # e.g. "layer1.0.bn1"; bnviz's own networks: "layer 1"
    kind: str                         # class name of the norm module ("BatchNorm2d"), or "" without one
    family: str | None                # one of NORM_FAMILIES, None without a norm module
    channels: int                     # C: length of the per-channel arrays (0 without a norm module)
    momentum: float | None = None     # PyTorch convention; None: cumulative average
    eps: float | None = None
    affine: bool = False              # has gamma/beta
    tracks_running_stats: bool = False
    activation: str | None = None     # class name of the activation module after it ("ReLU"), if any


@dataclass(frozen=True)
class Snapshot:
    """Everything recorded at one training step (the forward pass that used the weights after
    ``step`` updates)."""

    step: int
    taps: dict[tuple[int, str], TapStats]   # (layer index, tap name) -> stats
    norms: dict[int, NormStats]             # layer index -> per-channel norm state


@dataclass(frozen=True)
class EvalPoint:
    """Accuracy and population statistics after ``step`` updates."""

    step: int
    test_loss: float               # eval mode: BN uses its running statistics
    test_acc: float
    # With Config.bn_diagnostics only (otherwise NaN and empty):
    test_acc_batch_stats: float    # BN in training mode on test batches (batch statistics)
    test_acc_population: float     # BN with running stats replaced by the population stats
    population: dict[int, tuple[np.ndarray, np.ndarray]]  # layer -> (mean, unbiased var) of BN input


T = TypeVar("T")


@dataclass
class Thinned(Generic[T]):
    """A bounded series: records every ``stride`` steps; past ``cap`` items it drops every other
    item and doubles the stride, so memory is O(cap) however long the run, with even spacing.
    The newest item is always kept."""

    cap: int
    stride: int = 1
    steps: list[int] = field(default_factory=list)
    items: list[T] = field(default_factory=list)

    def due(self, step: int) -> bool:
        return step % self.stride == 0

    def add(self, step: int, item: T) -> None:
        if self.steps and self.steps[-1] == step:
            self.items[-1] = item
            return
        self.steps.append(step)
        self.items.append(item)
        if len(self.items) > self.cap:
            self.stride *= 2
            keep = [i for i, s in enumerate(self.steps) if s % self.stride == 0]
            if keep[-1] != len(self.steps) - 1:
                keep.append(len(self.steps) - 1)
            self.steps = [self.steps[i] for i in keep]
            self.items = [self.items[i] for i in keep]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __getitem__(self, i: int) -> T:
        return self.items[i]


@dataclass
class History:
    """The compact record of one run; what every figure is drawn from."""

    config: Config | None                     # None for a run bnviz did not train (bnviz.watch)
    layer_names: list[str]
    edges: dict[str, np.ndarray]
    snapshots: Thinned[Snapshot]
    losses: Thinned[tuple[float, float]]      # (training loss, batch accuracy) per step
    evals: Thinned[EvalPoint]
    diverged_at: int | None = None            # step whose loss was NaN/inf
    stopped_at: int | None = None             # step at which the progress callback stopped the run
    elapsed_s: float = 0.0

    @property
    def finished(self) -> bool:
        return self.diverged_at is None and self.stopped_at is None

    @property
    def taps(self) -> list[str]:
        present = {tap for snap in self.snapshots for (_, tap) in snap.taps}
        return [t for t in TAPS if t in present]

    def loss_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, loss, batch accuracy) arrays."""
        arr = np.asarray(self.losses.items, dtype=np.float64).reshape(-1, 2)
        return np.asarray(self.losses.steps), arr[:, 0], arr[:, 1]

    def eval_curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.evals.steps), np.asarray([getattr(e, key) for e in self.evals], dtype=np.float64)

    def snapshot_at(self, step: int) -> Snapshot:
        """The recorded snapshot nearest to ``step``."""
        i = int(np.argmin(np.abs(np.asarray(self.snapshots.steps) - step)))
        return self.snapshots[i]

    def tap_series(self, layer: int, tap: str) -> tuple[np.ndarray, list[TapStats]]:
        steps, stats = [], []
        for s, snap in zip(self.snapshots.steps, self.snapshots.items):
            if (layer, tap) in snap.taps:
                steps.append(s)
                stats.append(snap.taps[(layer, tap)])
        return np.asarray(steps), stats

    def nbytes(self) -> int:
        """Approximate memory held by the recorded numbers (numpy buffers plus per-object overhead)."""
        total = 0
        for snap in self.snapshots:
            for st in snap.taps.values():
                total += st.counts.nbytes + st.percentiles.nbytes + st.unit_percentiles.nbytes + 200
            for ns in snap.norms.values():
                total += sum(a.nbytes for a in (ns.batch_mean, ns.batch_var, ns.running_mean,
                                                  ns.running_var, ns.weight, ns.bias) if a is not None) + 200
        total += len(self.losses) * 120
        for e in self.evals:
            total += 200 + sum(m.nbytes + v.nbytes for m, v in e.population.values())
        return total


SNAPSHOT_CAP = 200
LOSS_CAP = 4000
EVAL_CAP = 400


def new_history(config: Config, layer_names: list[str], edges: dict[str, np.ndarray]) -> History:
    return History(config=config, layer_names=layer_names, edges=edges,
                   snapshots=Thinned(SNAPSHOT_CAP, stride=config.record_every),
                   losses=Thinned(LOSS_CAP), evals=Thinned(EVAL_CAP, stride=config.eval_every))
