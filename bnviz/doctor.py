"""The BN doctor: checks on a recorded run that name a fault, show its evidence and say the fix.

Why: the questions people bring about BatchNorm are mostly the same handful of faults (eval-mode
accuracy collapsing while train mode is fine; fine-tuning with frozen parameters whose running
statistics still move; NaN in ``running_var``; a batch of one; Keras' momentum typed into
PyTorch), and each leaves a signature in numbers the recorder keeps anyway. Every check reads only
the stored run (:class:`bnviz.store.StoredRun`): no model, no data.

What it will not do: prove a run healthy. A quiet doctor means none of these signatures is present
at the recorded steps; thresholds are chosen so a healthy run of the kind bnviz trains stays quiet
and a planted fault is found (tests/test_doctor.py plants each one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# (a) Running statistics against the recent batch statistics, per channel: the running mean's
# distance from the recent batches' mean in units of their standard deviation, and the ratio of
# the variances. A moving average that tracks its batches sits within a few tenths of a standard
# deviation; a collapse is a whole one or a ratio of several.
RECENT = 5                    # recorded steps the recent batch statistics are averaged over
MEAN_GAP_STD = 0.5            # |running - batch| mean gap (median over channels), in batch std
VAR_RATIO = 2.0               # running / batch variance beyond this factor either way
HOLDOUT_GAIN = 0.02           # held-out accuracy gained by recomputing the statistics that makes it a fault
# (d) A channel whose input hardly varies: BN divides by sqrt(var + eps) and amplifies its noise.
ZERO_VAR = 1e-6
# (e) Values one statistic is computed over, and for BatchNorm the batch size: few values make
# noisy statistics (Wu & He 2018 see BN degrade under 8 samples a batch); at 1 nothing is left.
FEW_VALUES_PROBLEM = 2
FEW_VALUES_WARNING = 8
SMALL_BATCH = 8               # samples per batch below which BatchNorm's statistics are noisy
# (f) Momentum: PyTorch weights the NEW batch by m; Keras' momentum weights the OLD value.
KERAS_LIKE = 0.5              # a PyTorch momentum this large looks like Keras' 0.9 / 0.99
PYTORCH_DEFAULT = 0.1         # below it a momentum makes the statistics lag; at it a short run is just short
INIT_WEIGHT_LEFT = 0.05       # weight the initial (0, 1) statistics still have after the run

SEVERITIES = ("ok", "warning", "problem")


@dataclass(frozen=True)
class Finding:
    """One check on one layer (or the whole run): what was found, the numbers, what to do.

    ``series`` holds the evidence to plot over ``steps``: name -> values (same length)."""

    check: str                 # "running_vs_batch", "frozen_but_moving", "nonfinite", "dead_channels", "few_values", "momentum"
    layer: str | None
    severity: str              # "ok" | "warning" | "problem"
    title: str
    evidence: str
    fix: str
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    series: dict[str, np.ndarray] = field(default_factory=dict)
    unit: str = ""             # what the series' values are, for the plot's axis


CHECKS = {
    "running_vs_batch": "running statistics far from recent batch statistics (eval-mode collapse)",
    "frozen_but_moving": "parameters frozen but running statistics still moving",
    "nonfinite": "non-finite values in buffers or parameters",
    "dead_channels": "channels with near-zero batch variance",
    "few_values": "too few values per channel",
    "momentum": "momentum in the other framework's convention",
}


def _ok(check: str, layer: str | None, evidence: str) -> Finding:
    return Finding(check, layer, "ok", CHECKS[check], evidence, "")


# How a normalization layer without running statistics normalizes, by family (LayerInfo.family).
OWN_STATISTICS = {
    "batch": "was built with track_running_stats=False: it normalizes with the statistics of the batch it is "
             "given, in eval mode too (so eval-mode outputs depend on the batch)",
    "layer": "normalizes each sample over its own features, in eval mode as in training",
    "rms": "scales each sample by the root mean square of its own features, in eval mode as in training",
    "group": "normalizes each sample over groups of its own channels, in eval mode as in training",
    "instance": "normalizes each sample and channel over its own positions, in eval mode as in training",
}


def _no_running_statistics(info: Any) -> str:
    """Why a check of running statistics does not apply to the layer ``info``, which keeps none."""
    how = OWN_STATISTICS.get(info.family, "normalizes with statistics of its own input")
    return f"not applicable: {info.kind} {how}; it keeps no running statistics"


def check_running_vs_batch(run: Any, info: Any) -> Finding:
    name = info.name
    if not info.tracks_running_stats:
        return _ok("running_vs_batch", name, _no_running_statistics(info))
    steps, bmean, bvar = run.batch_stats(name)
    _, rmean, rvar = run.running_stats(name)
    state = run.layer_state(name)
    counts = state["count"]
    finite = np.isfinite(bmean).all(1) & np.isfinite(bvar).all(1) & np.isfinite(rmean).all(1) & np.isfinite(rvar).all(1)
    if finite.sum() < 1:
        return _ok("running_vs_batch", name, "no finite statistics recorded")
    n = np.maximum(counts.astype(np.float64), 2)
    unbiased = bvar * (n / (n - 1))[:, None]              # running_var is unbiased: compare like with like
    gaps, ratios = [], []
    eps = info.eps or 1e-5
    for i in range(len(steps)):
        lo = max(0, i - RECENT + 1)
        window = [j for j in range(lo, i + 1) if finite[j]]
        if not finite[i] or not window:
            gaps.append(np.nan)
            ratios.append(np.nan)
            continue
        m = bmean[window].mean(0)
        v = unbiased[window].mean(0)
        gaps.append(float(np.median(np.abs(rmean[i] - m) / np.sqrt(v + eps))))
        ratios.append(float(np.median((rvar[i] + eps) / (v + eps))))
    gap, ratio = np.asarray(gaps), np.asarray(ratios)
    if not finite[-1]:
        # Judged at an earlier, finite step, it named a gap of long ago beside the non-finite
        # statistics that are the layer's real state (the non-finite check reports them).
        since = int(steps[int(np.flatnonzero(finite)[-1]) + 1])
        return _ok("running_vs_batch", name, f"not judged: its statistics are not finite from step {since} on "
                                             "(see the check of non-finite values)")
    last = int(np.flatnonzero(np.isfinite(gap))[-1])
    g, r = gap[last], ratio[last]
    evidence = (f"at step {int(steps[last])}: running mean {g:.2f} batch standard deviations from the mean of the "
                f"last {min(RECENT, last + 1)} recorded batches (median over {bmean.shape[1]} channels); running "
                f"variance {r:.2f} x theirs")
    bad = g > MEAN_GAP_STD or r > VAR_RATIO or r < 1 / VAR_RATIO
    severity = "problem" if bad else "ok"
    gain = _holdout_gain(run)
    if gain is not None:
        evidence += "; " + _holdout_evidence(run)
        if bad and gain < HOLDOUT_GAIN:   # eval mode does not suffer (yet): worth a look, not a fault
            severity = "warning"
    elif bad and info.momentum:
        left = (1 - info.momentum) ** _updates(state, info)[last]
        if left > INIT_WEIGHT_LEFT:       # early: the moving average still remembers its start (0, 1)
            severity = "warning"
            evidence += f"; the initial statistics still weigh {left:.0%} in them (too early to tell)"
    fix = ("Recompute the running statistics at the final weights (precise BN: reset them, set momentum=None, "
           "run 10-100 training batches through the model in train mode without updating weights, then eval), "
           "or lower the learning rate late in training / raise momentum so they keep up. If the held-out data "
           "differ from the training data, recompute them on the target domain (AdaBN).")
    series = {"mean gap (batch std)": gap, "variance ratio running/batch": ratio}
    return Finding("running_vs_batch", name, severity, CHECKS["running_vs_batch"], evidence,
                   fix if bad else "", steps, series, "median over channels")


def _holdout_gain(run: Any) -> float | None:
    """Held-out accuracy with the statistics recomputed minus with the running ones, at the last
    recorded step; None without a held-out batch."""
    if not {"holdout_acc", "holdout_precise_acc"} <= set(run.scalar_names):
        return None
    before, after = run.scalars("holdout_acc")[1], run.scalars("holdout_precise_acc")[1]
    return float(after[-1] - before[-1]) if len(before) and len(after) else None


def _holdout_evidence(run: Any) -> str:
    names = set(run.scalar_names)
    if {"holdout_acc", "holdout_precise_acc"} <= names:
        _, before = run.scalars("holdout_acc")
        _, after = run.scalars("holdout_precise_acc")
        return (f"held-out accuracy {before[-1]:.1%} with the running statistics, {after[-1]:.1%} with them "
                "recomputed at the same weights (precise BN)")
    return ""


def check_frozen_but_moving(run: Any, info: Any) -> Finding:
    name = info.name
    if not info.tracks_running_stats:
        return _ok("frozen_but_moving", name, _no_running_statistics(info))
    if not info.affine:
        return _ok("frozen_but_moving", name, "not applicable: the layer has no gamma and beta to freeze (affine=False)")
    state = run.layer_state(name)
    steps, rmean, rvar = run.running_stats(name)
    frozen_training = state["frozen"].astype(bool) & state["training"].astype(bool)
    moved = np.zeros(len(steps), dtype=bool)
    change = np.zeros(len(steps))
    if len(steps) > 1:
        d = np.abs(np.diff(rmean, axis=0)).max(1) + np.abs(np.diff(rvar, axis=0)).max(1)
        change[1:] = d
        moved[1:] = d > 0
    hit = frozen_training & moved
    if not hit.any():
        return _ok("frozen_but_moving", name, "parameters train, or the layer is in eval mode while frozen")
    first = int(steps[np.flatnonzero(hit)[0]])
    evidence = (f"gamma and beta have requires_grad=False but the layer ran in train() mode at "
                f"{int(hit.sum())} of {len(steps)} recorded steps (first at step {first}), and its running statistics "
                f"changed by up to {change[hit].max():.3g} between recorded steps")
    fix = ("Freezing parameters does not freeze BN: in train() mode it still normalizes with batch statistics "
           "and updates running_mean/var. Put the frozen BN layers in eval mode after every model.train() "
           "(e.g. `for m in model.modules(): if isinstance(m, nn.BatchNorm2d): m.eval()`), or set momentum=0.")
    return Finding("frozen_but_moving", name, "problem", CHECKS["frozen_but_moving"], evidence, fix, steps,
                   {"largest change of a running statistic": change}, "absolute change since the previous record")


def check_nonfinite(run: Any, info: Any) -> Finding:
    name = info.name
    parts = {}
    steps = None
    if info.tracks_running_stats:
        steps, rmean, rvar = run.running_stats(name)
        parts["running_mean"], parts["running_var"] = rmean, rvar
    if info.affine:
        steps, w, b = run.params(name)
        # An affine layer may lack one of the two (RMSNorm has a weight and no bias): what it
        # lacks reads as NaN, which is no fault.
        parts.update({label: v for label, array, v in (("weight (gamma)", "weight", w), ("bias (beta)", "bias", b))
                      if run.has(name, array)})
    if steps is None or not len(steps):
        return _ok("nonfinite", name, "no buffers or parameters recorded")
    bad = {k: (~np.isfinite(v)).sum(1) for k, v in parts.items()}
    any_bad = np.zeros(len(steps), dtype=bool)
    for v in bad.values():
        any_bad |= v > 0
    if not any_bad.any():
        return _ok("nonfinite", name, "every recorded value finite")
    first = int(np.flatnonzero(any_bad)[0])
    which = ", ".join(k for k, v in bad.items() if v[first] > 0)
    evidence = f"first at step {int(steps[first])}: non-finite values in {which}"
    fix = ("A NaN or inf in a running statistic poisons every eval-mode output. Usual causes: a diverging loss "
           "(lower the learning rate, clip gradients), float16 overflow of the variance under mixed precision "
           "(keep BN in float32, which torch.autocast does; check custom casts), or eps=0 with a constant channel. "
           "Reset the statistics (module.reset_running_stats()) and recompute them once training is stable.")
    return Finding("nonfinite", name, "problem", CHECKS["nonfinite"], evidence, fix, steps,
                   {f"non-finite {k}": v.astype(float) for k, v in bad.items()}, "channels")


def check_dead_channels(run: Any, info: Any) -> Finding:
    name = info.name
    steps, _, bvar = run.batch_stats(name)
    if not len(steps):
        return _ok("dead_channels", name, "no batch statistics recorded")
    dead = (np.nan_to_num(bvar, nan=np.inf) < ZERO_VAR).sum(1)
    recent = dead[-min(RECENT, len(dead)):]
    if recent.max() == 0:
        return _ok("dead_channels", name, f"every channel's batch variance above {ZERO_VAR:g}")
    evidence = (f"{int(recent.max())} of {bvar.shape[1]} channels had batch variance below {ZERO_VAR:g} "
                f"in the last recorded steps (at step {int(steps[-1])}: {int(dead[-1])})")
    fix = ("The input of these channels is (nearly) constant: BN divides by sqrt(var + eps) and amplifies "
           "whatever noise is left, or outputs only beta. Common causes: dead ReLUs feeding the layer, a padded "
           "or constant input feature, too large a learning rate. Check the previous layer; a larger eps also "
           "limits the amplification.")
    return Finding("dead_channels", name, "warning", CHECKS["dead_channels"], evidence, fix, steps,
                   {"channels with near-zero variance": dead.astype(float)}, "channels")


# What to do about too few values depends on what the layer averages over: more samples help
# BatchNorm only; the others normalize each sample by itself.
FEW_VALUES_FIX = {
    "batch": ("Batch statistics over this few values are mostly noise, and a batch of one cannot be normalized "
              "meaningfully in train mode. Use larger batches (or accumulate BN statistics over several), or a "
              "normalization that does not depend on the batch (GroupNorm, LayerNorm); for single-sample "
              "inference use eval mode."),
    "group": ("Each group statistic covers (channels / groups) x H x W values of one sample: use fewer groups "
              "(more channels per group), or normalize where the feature maps are larger."),
    "instance": ("InstanceNorm averages over the H x W positions of one channel of one sample: on small feature "
                 "maps that is too few. Use GroupNorm or LayerNorm there (they also average over channels), or "
                 "no normalization in the last, smallest stages."),
    "layer": ("The layer normalizes each sample over its normalized_shape alone, and this few features give "
              "noisy statistics (with 2 or fewer, little is left after subtracting the mean and dividing by "
              "the spread). Normalize over more features (a wider layer, or more trailing axes in "
              "normalized_shape); larger batches do not help, as no statistic is taken across samples."),
}


def check_few_values(run: Any, info: Any) -> Finding:
    name = info.name
    state = run.layer_state(name)
    steps, count, samples = state["steps"], state["count"], state["samples"]
    training = state["training"].astype(bool)
    if not training.any():
        return _ok("few_values", name, "never normalized with batch statistics at the recorded steps")
    least = int(count[training].min())
    at = int(steps[training][np.argmin(count[training])])
    what = {"batch": "values per channel in a batch (N x H x W)", "group": "values per group statistic",
            "instance": "values per instance and channel (H x W)"}.get(info.family, "values per statistic")
    # For BatchNorm the batch size matters beyond N x H x W: the H x W values of one image are
    # correlated, and with one sample BN normalizes every image by itself (instance norm in
    # training, something else in eval mode). Wu & He (2018) see BN degrade below 8 a batch.
    batch = info.family == "batch"
    fewest = int(samples[training].min()) if batch and len(samples) else 0
    problems, notes = [], []
    if least <= FEW_VALUES_PROBLEM:
        problems.append(f"as few as {least} {what} (at step {at})")
    elif least <= FEW_VALUES_WARNING:
        notes.append(f"as few as {least} {what} (at step {at})")
    if batch and 0 < fewest <= 1:
        problems.append("batches of one sample: each is normalized by its own statistics")
    elif batch and 0 < fewest < SMALL_BATCH:
        notes.append(f"batches of {fewest} samples (fewer than {SMALL_BATCH})")
    if not problems and not notes:
        extra = f", batches of at least {fewest} samples" if batch and fewest else ""
        return _ok("few_values", name, f"at least {least} {what}{extra}")
    severity = "problem" if problems else "warning"
    evidence = "; ".join(problems + notes)
    fix = FEW_VALUES_FIX.get(info.family, FEW_VALUES_FIX["layer"])
    series = {"values per statistic": count.astype(float)}
    if batch:
        series["samples per batch"] = samples.astype(float)
    return Finding("few_values", name, severity, CHECKS["few_values"], evidence, fix, steps, series, "values / samples")


def _updates(state: dict[str, np.ndarray], info: Any) -> np.ndarray:
    """Running-statistics updates made by each recorded step (S,): torch's num_batches_tracked, or
    the forwards made where the layer keeps no count (InstanceNorm updates its running statistics
    but leaves the counter at 0; a layer without the buffer reads NaN). ``state``: the layer's
    ``run.layer_state``."""
    tracked = state["num_batches_tracked"]
    forwards = state["steps"] + 1.0          # recorded step s: the forward after s updates made one more
    if info.family == "instance" or not np.isfinite(tracked).any():
        return forwards
    return np.where(np.isfinite(tracked), tracked, forwards)


def check_momentum(run: Any, info: Any) -> Finding:
    name = info.name
    m = info.momentum
    if not info.tracks_running_stats:
        return _ok("momentum", name, _no_running_statistics(info))
    if m is None:
        return _ok("momentum", name, "cumulative average (momentum=None)")
    steps, bmean, _ = run.batch_stats(name)
    _, rmean, _ = run.running_stats(name)
    updates = int(_updates(run.layer_state(name), info)[-1]) if len(steps) else 0
    series = {"running mean (channel 0)": rmean[:, 0], "batch mean (channel 0)": bmean[:, 0]} if len(steps) else {}
    if m >= KERAS_LIKE:
        evidence = (f"momentum={m:g}: in PyTorch the running statistics keep only {1 - m:.0%} of their old value "
                    "at every update, so they are essentially the last batch's statistics")
        fix = (f"This looks like Keras' convention (momentum = weight of the OLD value). PyTorch's momentum is the "
               f"weight of the NEW batch: Keras momentum={m:g} is PyTorch momentum={1 - m:.2g}. PyTorch's default is 0.1.")
        return Finding("momentum", name, "warning", CHECKS["momentum"], evidence, fix, steps, series, "value")
    left = (1 - m) ** updates if updates else 1.0
    if 0 < m < PYTORCH_DEFAULT and left > INIT_WEIGHT_LEFT:
        evidence = (f"momentum={m:g} after {updates} updates: the initial statistics (mean 0, variance 1) still weigh "
                    f"{left:.0%} in the running statistics (time constant 1/m = {1 / m:.0f} updates): they lag")
        fix = (f"A small PyTorch momentum like {m:g} is Keras' {1 - m:g} converted; it needs ~{3 / m:.0f} updates to "
               "forget the start. For a short run use PyTorch's default 0.1, or momentum=None (cumulative average), "
               "or recompute the statistics at the end (precise BN).")
        return Finding("momentum", name, "warning", CHECKS["momentum"], evidence, fix, steps, series, "value")
    early = (f"; the initial statistics (mean 0, variance 1) still weigh {left:.0%}: a short run, not a wrong "
             "momentum") if left > INIT_WEIGHT_LEFT else ""
    return _ok("momentum", name, f"momentum={m:g} (PyTorch convention; Keras {1 - m:g}), {updates} updates{early}")


LAYER_CHECKS = (check_running_vs_batch, check_frozen_but_moving, check_nonfinite, check_dead_channels,
                check_few_values, check_momentum)


def diagnose(run: Any) -> list[Finding]:
    """Every check on every normalization layer of ``run`` (a :class:`bnviz.store.StoredRun`),
    problems first, then warnings, then the quiet checks; a layer that keeps no per-channel
    statistics (no norm module) is skipped. A check that cannot read what it needs reports that
    as a warning instead of failing the others."""
    findings: list[Finding] = []
    for info in run.layers:
        if info.family is None:
            continue
        for check in LAYER_CHECKS:
            try:
                # a run with NaN / inf statistics is what the nonfinite check is for: numpy's
                # warnings on the arithmetic with them are no news to the reader of the report
                with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                    findings.append(check(run, info))
            except (KeyError, ValueError, IndexError) as exc:
                findings.append(Finding(check.__name__.removeprefix("check_"), info.name, "warning",
                                        "could not be checked", f"{type(exc).__name__}: {exc}", ""))
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    return sorted(findings, key=lambda f: order[f.severity])


def summary(findings: list[Finding]) -> dict[str, int]:
    """How many findings of each severity."""
    return {s: sum(f.severity == s for f in findings) for s in SEVERITIES}


def worst(findings: list[Finding]) -> str:
    return max((f.severity for f in findings), key=SEVERITIES.index, default="ok")
