"""Comparisons of runs against their own noise: several seeds, a mean, a 95 % interval, a verdict.

One seed is one draw: the same network trained from another seed (other initial weights, other
batches) ends a point or more away. So a comparison of two networks is stated over ``n`` seeds:

* a number: the mean over seeds and Student's t-interval, mean ± t_{0.975, n-1} · s / sqrt(n), with
  s the sample standard deviation (ddof 1). It covers the true mean in 95 % of repetitions when
  the per-seed values are normal and independent;
* a comparison: *paired* by seed. Seed k gives both networks the same data split and the same
  batch order (and the same initialization where their parameters have the same shapes), so the
  difference d_k = a_k - b_k removes what the seed does to both; the t-interval of the d_k is the
  interval of the difference, narrower than two separate intervals would suggest;
* a curve: at every step the mean and t-interval of the seeds that reached it (a band).

No scipy: the t quantile is computed here (the regularized incomplete beta function by its
continued fraction, inverted by bisection). scipy.stats is heavy to import and scikit-learn's
optional dependency; the tests check this one against it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from .config import Config

if TYPE_CHECKING:
    from .record import History

LEVEL = 0.95
MAX_SEEDS = 20
METHOD = ("mean over seeds; bands and ± are 95 % Student t-intervals over seeds (t quantile of n - 1 degrees "
          "of freedom times the standard deviation over seeds / sqrt(n)), an accuracy's cut at 0 and 100 %; verdicts "
          "pair the runs by seed")


def band_caption(n: int) -> str:
    """What a caption adds about bands over ``n`` seeds (nothing for one seed)."""
    if n < 2:
        return ""
    return (f" Over {n} seeds: the line is the mean, the band the 95 % Student t-interval of the mean at each step "
            "(t quantile of n - 1 degrees of freedom times the standard deviation over seeds / sqrt(n)); an "
            "accuracy's band is cut at 0 and 100 %.")


def seed_label(label: str, seed: int, first_seed: int) -> str:
    """The label of ``label``'s run at ``seed``: the label itself for the page's own seed."""
    return label if seed == first_seed else f"{label} (seed {seed})"


def expand(configs: Mapping[str, Config], n: int) -> dict[str, Config]:
    """Every labelled config at ``n`` seeds, seed by seed (all runs of the first seed come first:
    they are trained, and drawn, first)."""
    out: dict[str, Config] = {}
    for k in range(max(1, n)):
        for label, cfg in configs.items():
            out[seed_label(label, cfg.seed + k, cfg.seed)] = cfg.replace(seed=cfg.seed + k)
    return out


# ----------------------------------------------------------------------------------------------
# Student's t distribution


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes' betacf, modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b), the regularized incomplete beta function, for x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):  # where the fraction converges fast; else use I_x(a,b) = 1 - I_{1-x}(b,a)
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom:
    1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0, and symmetric."""
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (e.g. 12.706 for p = 0.975,
    df = 1), by bisection on :func:`t_cdf` to 1e-12."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------------------------
# Intervals


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and its t-interval [low, high] at ``level``; low = high = NaN for n < 2
    (one value says nothing about its spread). ``given``: how many values there were, the
    non-finite ones (diverged runs) included, when known."""

    mean: float
    low: float
    high: float
    n: int
    level: float = LEVEL
    given: int | None = None

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def scaled(self, factor: float) -> "Interval":
        """The same interval in other units (accuracy 0..1 -> percent: 100)."""
        return replace(self, mean=self.mean * factor, low=self.low * factor, high=self.high * factor)


def mean_interval(values: Iterable[float], level: float = LEVEL) -> Interval:
    """Mean and t-interval of the finite ``values`` (NaNs, e.g. diverged runs, are left out)."""
    x = np.asarray(list(values), dtype=np.float64)
    given = len(x)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level, given)
    mean = float(np.mean(x))
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, level, given)
    half = t_quantile(0.5 + level / 2.0, n - 1) * float(np.std(x, ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level, given)


def within_run_budget(n_seeds: int, runs_per_seed: int, max_runs: int) -> int:
    """The seeds a page trains at: ``n_seeds``, or as many as keep ``runs_per_seed`` runs a seed
    within ``max_runs`` runs (at least one)."""
    n = max(1, n_seeds)
    if n > 1 and runs_per_seed * n > max_runs:
        return max(1, max_runs // runs_per_seed)
    return n


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean and t-interval of a_k - b_k over the seeds k where both are finite (paired by seed)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need one of each per seed; got {len(a)} and {len(b)}")
    return mean_interval(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), level)


def verdict(a: str, b: str, diff: Interval, unit: str = "points", digits: int = 1, *,
            lower_is_better: bool = False, number: str | None = None) -> str:
    """One line on a paired difference ``diff`` of a minus b, e.g. "BN ahead by 0.6 points (95 % CI
    0.1 to 1.1) over 8 seeds", or "no difference detectable over 5 seeds (-0.4 to 0.8)" when the
    interval holds 0 (then the interval is of a minus b, and the line names them).
    ``lower_is_better``: the one with the lower value is "lower by" (a loss, a curvature).
    ``number``: the format of the numbers (default ``digits`` decimals)."""
    f = number or f"{{:.{digits}f}}"
    unit = f" {unit}" if unit else ""
    level = f"{diff.level * 100:g} %"
    if diff.n < 2 and (diff.given or 0) >= 2:   # seeds enough, but runs diverged
        some = "none" if diff.n == 0 else f"only {diff.n}"
        return (f"{a} vs {b}: no verdict, {some} of the {diff.given} seeds gave both a value "
                "(a run that diverged gives none)")
    if diff.n < 2:
        return f"{a} vs {b}: one seed, no interval (choose 2 seeds or more for a verdict)"
    seeds = f"over {diff.n} seeds"
    word = "lower" if lower_is_better else "ahead"
    if diff.low > 0:   # a above b
        who = b if lower_is_better else a
        return f"{who} {word} by {f.format(diff.mean)}{unit} ({level} CI {f.format(diff.low)} to {f.format(diff.high)}) {seeds}"
    if diff.high < 0:
        who = a if lower_is_better else b
        return (f"{who} {word} by {f.format(-diff.mean)}{unit} ({level} CI {f.format(-diff.high)} to "
                f"{f.format(-diff.low)}) {seeds}")
    return (f"{a} vs {b}: no difference detectable {seeds} ({f.format(diff.low)} to {f.format(diff.high)}"
            f"{unit}, {a} minus {b})")


ACCURACY = (0.0, 1.0)   # the possible range of an accuracy, for headline's bounds


def accuracy_help(n_seeds: int) -> str:
    """What an accuracy headline over ``n_seeds`` seeds shows, for its help text."""
    return (f"mean ± half the 95 % t-interval over {n_seeds} seeds (an interval that reaches past 0 or 100 % "
            "is shown as its two ends, cut to that range)")


def headline(values: Iterable[float], *, scale: float = 100.0, unit: str = " %", digits: int = 1,
             bounds: tuple[float, float] | None = None) -> str:
    """A headline number over seeds: "97.6 % ± 0.5" (mean ± half the 95 % interval), or the one value.

    ``bounds``: the values' possible range (:data:`ACCURACY`: 0 to 1). An interval reaching past
    it is shown as its ends cut to that range, "76.4 % (95 % CI 0.0 to 100.0)": with 2 seeds the
    t quantile is 12.7, and "76.4 % ± 96.9" named accuracies that cannot be."""
    iv = mean_interval(values).scaled(scale)
    if iv.n == 0:
        return "n/a"
    f = f"{{:.{digits}f}}"
    if iv.n < 2:
        return f"{f.format(iv.mean)}{unit}"
    if bounds is not None:
        lowest, highest = bounds[0] * scale, bounds[1] * scale
        if iv.low < lowest or iv.high > highest:
            return (f"{f.format(iv.mean)}{unit} ({iv.level * 100:g} % CI {f.format(max(iv.low, lowest))} to "
                    f"{f.format(min(iv.high, highest))})")
    return f"{f.format(iv.mean)}{unit} ± {f.format(iv.half_width)}"


# ----------------------------------------------------------------------------------------------
# Curves


@dataclass(frozen=True)
class Band:
    """A curve over seeds: at each step the mean and t-interval of the seeds that reached it
    (``n`` of them; low = high = NaN where n < 2)."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray


def band(curves: Sequence[tuple[np.ndarray, np.ndarray]], level: float = LEVEL,
         bounds: tuple[float, float] | None = None) -> Band:
    """Per-step mean and t-interval of several (steps, values) curves, one per seed.

    Curves are aligned on their step values (seeds of one config record the same steps; a run
    that diverged stops early, and its missing steps leave it out of those steps' statistics).
    ``bounds``: the values' possible range (:data:`ACCURACY`): the interval is cut to it, as a
    headline's is (with 2 seeds, an accuracy's band reached far past 100 % and 0 %).
    """
    all_steps = np.unique(np.concatenate([np.asarray(s) for s, _ in curves])) if curves else np.zeros(0)
    table = np.full((len(curves), len(all_steps)), np.nan)
    for i, (s, v) in enumerate(curves):
        table[i, np.searchsorted(all_steps, np.asarray(s))] = np.asarray(v, dtype=np.float64)
    finite = np.isfinite(table)
    n = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.nansum(np.where(finite, table, 0.0), axis=0) / np.maximum(n, 1), np.nan)
        dev = np.where(finite, table - mean, 0.0)
        sd = np.sqrt((dev ** 2).sum(axis=0) / np.maximum(n - 1, 1))
    t = np.array([t_quantile(0.5 + level / 2.0, k - 1) if k >= 2 else np.nan for k in range(len(curves) + 1)])
    half = t[n] * sd / np.sqrt(np.maximum(n, 1))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = np.maximum(low, bounds[0]), np.minimum(high, bounds[1])   # NaN (one seed) stays NaN
    return Band(steps=all_steps, mean=mean, low=low, high=high, n=n)


# ----------------------------------------------------------------------------------------------
# Runs over seeds


def final_test_accuracy(history: "History") -> float:
    """Eval-mode test accuracy after the last update; NaN for a run that diverged or was stopped
    (left out of the statistics, as :func:`mean_interval` leaves out NaNs)."""
    if not history.finished or not len(history.evals):
        return math.nan
    return float(history.evals[-1].test_acc)


def default_pairs(labels: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair of a few runs; with more than four, each against the first (the page's own run)."""
    if len(labels) <= 4:
        return [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    return [(labels[0], b) for b in labels[1:]]


@dataclass(frozen=True)
class SeedSummary:
    """What a page says about runs over several seeds: a headline number per run and a verdict per pair."""

    seeds: tuple[int, ...]
    headlines: dict[str, str]       # label -> "97.6 % ± 0.5"
    intervals: dict[str, Interval]  # label -> the interval behind it, in percent
    verdicts: list[str]

    @property
    def title(self) -> str:
        """"Across 3 seeds" ("Across 1 seed" when the others did not finish)."""
        return f"Across {count(len(self.seeds))}"

    @property
    def caption(self) -> str:
        first, last = self.seeds[0], self.seeds[-1]
        which = f"({first} to {last})" if first != last else f"({first})"
        return (f"Final test accuracy (eval mode, after the last update) over {count(len(self.seeds))} "
                f"{which}: {METHOD}. A run that diverged or was stopped is left out.")


def count(n: int) -> str:
    """"1 seed", "3 seeds"."""
    return f"{n} seed" if n == 1 else f"{n} seeds"


def summarize(histories: Mapping[str, Sequence["History"]], seeds: Sequence[int],
              pairs: Sequence[tuple[str, str]] | None = None) -> SeedSummary:
    """Headline numbers and paired verdicts on final test accuracy; ``histories[label][k]`` is the
    run of ``seeds[k]`` (the same k for every label: that is what pairs them)."""
    values = {label: [final_test_accuracy(h) for h in hs] for label, hs in histories.items()}
    pairs = default_pairs(list(values)) if pairs is None else pairs
    verdicts = [verdict(a, b, paired_difference(values[a], values[b]).scaled(100.0)) for a, b in pairs
                if a in values and b in values]
    return SeedSummary(seeds=tuple(seeds), headlines={k: headline(v, bounds=ACCURACY) for k, v in values.items()},
                       intervals={k: mean_interval(v).scaled(100.0) for k, v in values.items()}, verdicts=verdicts)
