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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Iterator, Sequence, TypeVar

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


def _sorted_percentiles(s: np.ndarray, start: np.ndarray, n: np.ndarray) -> np.ndarray:
    """numpy's default ("linear") percentiles of each row of the row-sorted ``s`` (k, m), over the
    ``n[i]`` values from column ``start[i]`` on (a sorted row's finite block): (k, P) float32."""
    if len(s) and (start == 0).all() and (n == s.shape[1]).all():  # every value finite: the usual case
        lo, hi, frac = _percentile_positions(s.shape[1])
        a = s[:, lo].astype(np.float64)
        return (a + (s[:, hi].astype(np.float64) - a) * frac).astype(np.float32)
    out = np.full((len(s), len(PERCENTILES)), np.nan, dtype=np.float32)
    for first, size in set(zip(start.tolist(), n.tolist())):  # one pair unless values are not finite
        if size == 0:
            continue
        rows = np.flatnonzero((start == first) & (n == size))[:, None]
        lo, hi, frac = _percentile_positions(size)
        a = s[rows, first + lo].astype(np.float64)
        b = s[rows, first + hi].astype(np.float64)
        out[rows[:, 0]] = (a + (b - a) * frac).astype(np.float32)
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


def sorted_rows(tensors: Sequence[torch.Tensor], relu_of: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """The values of each tensor (all of one shape (N, C, ...)) sorted, one row each, then for each
    index in ``relu_of`` the ReLU of that tensor's row ((k + r, m) in all); and the same rows for
    unit (channel) 0 alone, across the batch and any spatial positions.

    ReLU is elementwise and non-decreasing, so the ReLU of a sorted row is the sorted row of the
    ReLU: a ReLU's output needs no copy and no sort of its own (see :mod:`bnviz.recorder`).
    """
    import torch  # here: bnviz.store reads runs through this module without importing torch
    k, r = len(tensors), len(relu_of)
    shape = tuple(tensors[0].shape)
    rows = np.empty((k + r, *shape), dtype=tensors[0].detach()[:0].numpy().dtype)
    torch.stack([t.detach() for t in tensors], out=torch.from_numpy(rows[:k]))
    unit = (rows[:k, :, 0] if rows.ndim > 2 else rows[:k]).reshape(k, -1)
    unit = np.sort(unit, axis=1)
    s = rows.reshape(k + r, -1)
    s[:k].sort(axis=1)
    if r:
        # (a view, not a gathered copy, when every row has its ReLU: the usual case)
        np.maximum(s[:k] if list(relu_of) == list(range(k)) else s[list(relu_of)], 0, out=s[k:])
        unit = np.concatenate([unit, np.maximum(unit[list(relu_of)], 0)])
    return s, unit


def summarize_sorted(s: np.ndarray, unit: np.ndarray, edges: Sequence[np.ndarray]) -> list[TapStats]:
    """The :class:`TapStats` of each row of the row-sorted ``s`` (k, m), with ``unit`` (k, u) the
    sorted values of its unit 0 and ``edges[i]`` row i's histogram edges.

    Each statistic is one numpy call for all rows rather than one per row: a snapshot summarises
    ~6 tensors of 6,400 values, and numpy's per-call overhead, not the arithmetic, was most of its
    cost. Rows need not come from a sort of their own: a ReLU's output, sorted, is the ReLU of its
    sorted input (see :mod:`bnviz.recorder`).
    """
    k, m = s.shape
    start, n = _finite_block(s)
    finite = s.astype(np.float64) if (n == m).all() else np.where(np.isfinite(s), s, 0).astype(np.float64)
    total = finite.sum(axis=1)
    squares = np.einsum("ij,ij->i", finite, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / n, np.nan)
        std = np.where(n > 0, np.sqrt(np.maximum(squares / n - mean * mean, 0.0)), np.nan)
    percentiles = _sorted_percentiles(s, start, n)
    unit_percentiles = _sorted_percentiles(unit, *_finite_block(unit))
    # Bin j holds [e_j, e_j+1), the last bin is closed: counts from where the edges fall in the
    # sorted values (-inf sorts first, so it is taken off "below"; NaN and +inf sort last). The
    # exact zeros (dead ReLUs) are found the same way. Rows that share edges are done together.
    by_edges: dict[int, list[int]] = {}
    for i, e in enumerate(edges):
        by_edges.setdefault(id(e), []).append(i)
    counts: list[np.ndarray] = [None] * k  # type: ignore[list-item]
    below, last, zeros = np.empty(k, np.int64), np.empty(k, np.int64), np.empty(k, np.int64)
    for rows in by_edges.values():
        queries, bins = _queries(edges[rows[0]], s.dtype)
        left = np.stack([s[i].searchsorted(queries) for i in rows]) - start[rows, None]
        c = np.diff(left[:, :bins + 1], axis=1).astype(np.int32)   # left[bins]: values <= the last edge
        for j, i in enumerate(rows):
            counts[i] = c[j]
        below[rows], last[rows] = left[:, 0], left[:, bins]
        zeros[rows] = left[:, bins + 2] - left[:, bins + 1]
    above, nonfinite = n - last, m - n
    with np.errstate(invalid="ignore", divide="ignore"):
        zero_frac = np.where(n > 0, zeros / np.maximum(n, 1), np.nan)
    return [TapStats(counts=counts[i], below=b, above=a, nonfinite=nf, percentiles=percentiles[i],
                     unit_percentiles=unit_percentiles[i], mean=mu, std=sd, zero_frac=z, n=size)
            for i, (b, a, nf, mu, sd, z, size) in enumerate(zip(
                below.tolist(), above.tolist(), nonfinite.tolist(), mean.tolist(), std.tolist(),
                zero_frac.tolist(), n.tolist()))]


_QUERIES: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, int]] = {}


def _queries(edges: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """What to look up (left side) in a sorted row, and the number of bins: where each bin
    starts (every edge but the last), the next value above the last edge (the last bin is
    closed), then 0 and the next value above 0 (the exact zeros lie between). In a ``dtype`` row
    nothing lies between a value and the next one, so a left-side search of the next value is a
    right-side search of the value itself: one search per row instead of two. (A tap's edges
    are fixed for a run: built once per edges array.)"""
    hit = _QUERIES.get((id(edges), dtype.num))
    if hit is None or hit[0] is not edges:  # an id can be reused once its array is gone
        if len(_QUERIES) > 256:  # a handful per run; bounded all the same
            _QUERIES.clear()
        e = edges.astype(dtype)
        above = np.nextafter(np.array([e[-1], 0], dtype=dtype), np.array(np.inf, dtype=dtype))
        hit = (edges, np.concatenate([e[:-1], above[:1], np.zeros(1, dtype), above[1:]]), len(e) - 1)
        _QUERIES[(id(edges), dtype.num)] = hit
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
