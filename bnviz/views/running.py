"""Running statistics vs momentum: BN's running averages on a known stream, and in a network.

Part (a) needs no training: :mod:`bnviz.experiments.streams` simulates batches from a known distribution and
the running estimates for several momenta. Part (b) trains the same network once per momentum and
compares a BN layer's running statistics with the population statistics of the current weights,
and eval accuracy with running, population and batch statistics.

Momenta are PyTorch's (weight of the new batch) everywhere in the code and the URL; the page can
*label* them in Keras' convention (weight of the old value, ``1 - m``).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .. import theory
from ..experiments import streams
from ..config import Config, parse_list, parse_number
from ..figures import running as figs
from ..train import Run
from . import View

DEFAULT = Config(dataset="spirals", steps=500, lr=0.3, momentum=0.1, record_every=20, eval_every=20)
EXTRA_MOMENTA: tuple[float | None, ...] = (0.01, 0.5)
NETWORK_MOMENTA: tuple[float | None, ...] = (0.001, 0.01, 0.03, 0.1, 0.3, 0.5, 0.9, 1.0, None)
MAX_RUNS = 5

STREAM_MOMENTA: tuple[float | None, ...] = (0.001, 0.01, 0.05, 0.1, 0.3, 0.5, 0.9, None)
DEFAULT_STREAM_MOMENTA: tuple[float | None, ...] = (0.01, 0.1, 0.5, None)
DEFAULT_STREAM = streams.StreamSpec()
CONVENTIONS = ("pytorch", "keras")
VARIANCES = ("unbiased", "biased")

# Stream settings the page offers: options (a float or int setting snaps to the nearest one).
STREAM_OPTIONS: dict[str, tuple[Any, ...]] = {
    "batch_size": (1, 2, 4, 8, 16, 32, 64, 128, 256),
    "n_batches": (50, 100, 200, 300, 500, 1000, 2000, 5000),
    "mu": (-5.0, -2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 5.0),
    "sigma": (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
    "drift": streams.DRIFTS,
    "mean_shift": (-5.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0),
    "std_factor": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0),
}
SEED_RANGE = (0, 9999)


# ----- momenta ---------------------------------------------------------------------------------
def momentum_label(m: float | None, convention: str = "pytorch") -> str:
    """A momentum as the chosen framework writes it (the value is always PyTorch's)."""
    if m is None:
        return "cumulative (None)"
    if convention == "keras":
        return f"Keras {theory.torch_to_keras_momentum(m):.4g}"
    return f"PyTorch {m:g}"


def momentum_choice(m: float | None) -> str:
    """A momentum in both conventions, for the controls: ``PyTorch 0.01 = Keras 0.99``."""
    if m is None:
        return momentum_label(None)
    return f"{momentum_label(m)} = {momentum_label(m, 'keras')}"


def format_momenta(momenta: Sequence[float | None]) -> str:
    """Comma-separated, for the URL: ``0.01,0.1,none``."""
    return ",".join("none" if m is None else f"{m:g}" for m in momenta)


def parse_momenta(text: str) -> tuple[list[float | None], list[str]]:
    """Momenta from a comma-separated URL value; bad items are dropped with a note. Never raises."""
    return parse_list(text, _momentum)


def _momentum(item: str) -> float | None:
    if item.lower() in ("none", "cumulative", "null"):
        return None
    value = parse_number(item, "momentum")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"momentum {item[:20]} is outside [0, 1] (PyTorch convention)")
    if value == 0.0:
        raise ValueError("momentum 0 never updates the running statistics: they would stay at their "
                         "initial values (mean 0, variance 1) for ever")
    return value


def sort_momenta(momenta: Sequence[float | None]) -> list[float | None]:
    """Smallest momentum first, the cumulative average (None) last."""
    return sorted(set(momenta), key=lambda m: (m is None, m or 0.0))


def network_momenta(config: Config, extra: Sequence[float | None] = EXTRA_MOMENTA) -> list[float | None]:
    """The config's momentum and the extra ones, without repeats, smallest first."""
    return sort_momenta([config.momentum, *extra])


def cadence(steps: int) -> int:
    """Steps between recordings and evaluations: about 25 points whatever the run length."""
    return max(1, steps // 25)


def runs(config: Config, extra: Sequence[float | None] = EXTRA_MOMENTA) -> dict[str, Config]:
    """One run per momentum; recording and evaluation on the same steps so they pair up."""
    every = cadence(config.steps)
    return {momentum_label(m): config.replace(momentum=m, record_every=every, eval_every=every, bn_diagnostics=True)
            for m in network_momenta(config, extra)}


# ----- stream settings -------------------------------------------------------------------------
def coerce_stream_value(name: str, raw: Any) -> tuple[Any, str | None]:
    """A stream setting from the URL (a string) or a widget, snapped to what the page offers."""
    default = getattr(DEFAULT_STREAM, name)
    if name == "drift":
        if raw in streams.DRIFTS:
            return raw, None
        return default, f"drift: {str(raw)[:20]!r} is not one of {', '.join(streams.DRIFTS)}; kept {default!r}"
    try:
        value = float(str(raw)[:32])
    except ValueError:
        return default, f"{name}: {str(raw)[:20]!r} is not a number; kept {default!r}"
    if not math.isfinite(value):
        return default, f"{name}: {str(raw)[:20]!r} is not a finite number; kept {default!r}"
    if name == "seed":
        lo, hi = SEED_RANGE
        clamped = int(round(min(max(value, lo), hi)))
        if clamped == value:
            return clamped, None
        return clamped, f"seed: {str(raw)[:20]} is not a whole number in [{lo}, {hi}]; using {clamped}"
    options = STREAM_OPTIONS[name]
    snapped = min(options, key=lambda o: abs(o - value))
    if snapped != value:
        return snapped, f"{name}: {str(raw)[:20]} is not offered; using the nearest, {snapped:g}"
    return snapped, None


def momentum_table(momenta: Sequence[float | None], convention: str, sigma: float, n: int) -> list[dict[str, str]]:
    """Per momentum: both conventions, half-life, stationary noise of the running mean, drift lag."""
    rows = []
    for m in momenta:
        if m is None:
            rows.append({"momentum": momentum_label(m, convention), "PyTorch m": "None (1/t)",
                         "Keras momentum": "(no equivalent)", "half-life (batches)": "(not an EMA)",
                         "stationary std of running mean": "sigma / sqrt(n t): shrinks for ever",
                         "lag behind a linear drift (batches)": "(t - 1) / 2: grows for ever"})
            continue
        rows.append({
            "momentum": momentum_label(m, convention), "PyTorch m": f"{m:g}",
            "Keras momentum": f"{theory.torch_to_keras_momentum(m):.4g}",
            "half-life (batches)": f"{theory.ema_half_life(m):.3g}",
            "stationary std of running mean":
                f"{math.sqrt(theory.ema_stationary_variance(m, theory.batch_mean_variance(sigma ** 2, n))):.3g}",
            "lag behind a linear drift (batches)": f"{streams.drift_lag(m):.3g}"})
    return rows


def estimates(stream: streams.Stream, stat: str, momenta: Sequence[float | None],
              convention: str = "pytorch", channel: int = 0) -> dict[str, figs.Estimate]:
    """Running estimate and theory band of ``stat`` for each momentum, labelled in ``convention``."""
    out = {}
    for m in momenta:
        values = streams.running_estimate(stream.batch_stat(stat)[:, channel], m, streams.INITIAL[stat])
        expected, sd = streams.expected_band(stream, stat, m)
        out[momentum_label(m, convention)] = figs.Estimate(values=values, expected=expected, sd=sd)
    return out


def stream_figures(spec: streams.StreamSpec, momenta: Sequence[float | None], convention: str = "pytorch",
                   variance: str = "unbiased") -> dict[str, go.Figure]:
    """The stream's running-mean and running-variance figures (part a)."""
    stream = streams.simulate(spec)
    var_stat = "var" if variance == "unbiased" else "var_biased"
    return {
        "stream running mean": figs.stream_estimates(stream, "mean", estimates(stream, "mean", momenta, convention)),
        "stream running variance": figs.stream_estimates(stream, var_stat,
                                                         estimates(stream, var_stat, momenta, convention)),
    }


# ----- network ---------------------------------------------------------------------------------
def bn_layers(run: Run) -> list[int]:
    """Layers whose BN keeps running statistics and whose population statistics were recorded."""
    h = run.history
    if not h.snapshots or not h.evals:
        return []
    last = h.snapshots[-1].norms
    return [i for i in sorted(last) if last[i].running_mean is not None and i in h.evals[-1].population]


def running_vs_population(run: Run, layer: int) -> figs.RunningVsPopulation:
    """Pair each recorded step's running statistics with the population statistics at that step.

    Snapshots and evaluations share a cadence (:func:`runs`), so the steps recorded by both pair
    up exactly; steps only one of them holds (the last snapshot, thinned items) are left out.
    """
    h = run.history
    evals = {e.step: e for e in h.evals}
    steps, rm, rv, pm, pv = [], [], [], [], []
    for step, snap in zip(h.snapshots.steps, h.snapshots.items):
        ns = snap.norms.get(layer)
        point = evals.get(step)
        if ns is None or ns.running_mean is None or point is None or layer not in point.population:
            continue
        steps.append(step)
        rm.append(ns.running_mean)
        rv.append(ns.running_var)
        pm.append(point.population[layer][0])
        pv.append(point.population[layer][1])
    channels = len(rm[0]) if rm else 0

    def arr(rows: list[np.ndarray]) -> np.ndarray:
        return np.asarray(rows, dtype=np.float64).reshape(len(steps), channels)

    return figs.RunningVsPopulation(steps=np.asarray(steps, dtype=np.int64), running_mean=arr(rm),
                                    running_var=arr(rv), population_mean=arr(pm), population_var=arr(pv),
                                    eps=run.config.eps)


def network_figures(trained: Mapping[str, Run], layer: int, step: int | None = None,
                    convention: str = "pytorch") -> dict[str, go.Figure]:
    """Part (b): error vs step, per-channel scatter at ``step`` (default: :func:`default_step`),
    eval accuracy; runs labelled by their momentum in ``convention``."""
    relabelled = {momentum_label(r.config.momentum, convention): r for r in trained.values()}
    comparisons = {label: running_vs_population(r, layer) for label, r in relabelled.items()}
    first = next(iter(trained.values()))
    layer_name = first.history.layer_names[layer]
    if step is None:
        paired = paired_steps(comparisons.values())
        step = default_step(paired, first.config.steps) if paired else 0
    return {
        "running vs population error": figs.population_error(comparisons, layer_name),
        "running vs population per channel": figs.population_scatter(comparisons, step, layer_name),
        "eval accuracy by statistics": figs.eval_accuracy({k: r.history for k, r in relabelled.items()}),
    }


def default_layer(layers: Sequence[int]) -> int:
    """The second BN layer when there is one: the first one's input often has mean exactly 0
    (standardized data through a Linear without bias), which hides the running mean's lag."""
    return layers[1] if len(layers) > 1 else layers[0]


def default_step(paired: Sequence[int], steps: int) -> int:
    """The paired step nearest a fifth of the run, where a small momentum still lags visibly."""
    return min(paired, key=lambda s: abs(s - steps / 5))


def paired_steps(comparisons: Iterable[figs.RunningVsPopulation]) -> list[int]:
    """Steps every comparison holds (the runs share their cadence, so normally all of them)."""
    sets = [set(c.steps.tolist()) for c in comparisons]
    return sorted(set.intersection(*sets)) if sets else []


def accuracy_gap(run: Run) -> tuple[int, float, float, float]:
    """(step, test accuracy with running stats, with population stats, with batch stats) of the
    evaluation with the largest population - running gap."""
    best = max(run.history.evals, key=lambda e: e.test_acc_population - e.test_acc)
    return best.step, best.test_acc, best.test_acc_population, best.test_acc_batch_stats


def make_figures(config: Config, trained: Mapping[str, Run]) -> dict[str, go.Figure]:
    """Every figure of the page at its default display settings (used by ``python -m bnviz export``)."""
    out = stream_figures(DEFAULT_STREAM, DEFAULT_STREAM_MOMENTA)
    usable = {k: r for k, r in trained.items() if bn_layers(r)}
    if usable:
        out.update(network_figures(usable, default_layer(bn_layers(next(iter(usable.values()))))))
    return out


VIEW = View(slug="running", title="Running statistics vs momentum", default=DEFAULT, runs=runs,
            figures=make_figures)
