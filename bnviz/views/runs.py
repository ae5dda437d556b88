"""Your runs: what the "Your runs" page reads and draws, without Streamlit.

A practitioner records their own training with ``bnviz.watch(model, "runs/my-resnet")``; the page
lists the runs under the runs folder, reads the one picked (while it is still being written, too)
and draws it with the figures bnviz's own runs use, plus the BN doctor's findings.

Nothing here trains, so this module defines no :class:`~bnviz.views.View`: a run is named by its
folder, not by a Config, and ``bnviz export`` has nothing to train for it.

Reading is cheap but not free (the history, every scalar, the doctor's checks: some 50 ms for a
small run, over 100 ms for the 9 BN layers of examples/watch_resnet.py), and a page reruns for
every display change and every new step of a live run: what one commit of a run holds is read
once, in :func:`read_run`, and kept (:data:`KEPT` runs, shared by all sessions, read-only) until
the run's next commit. Checking a live run for news (:func:`progress`) reads its meta only.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from .. import store
from ..doctor import CHECKS, OWN_STATISTICS, Finding, diagnose
from ..figures import activations as act_figs
from ..figures import runs as figs
from ..record import TAP_LABELS, History, LayerInfo, NormStats, Snapshot, Thinned

KEPT = 8                # run contents kept in memory (one per run and commit)
MAX_PANELS = 8          # layers the histogram figure shows side by side at most
CROWDED_PANELS = 4      # beyond this many panels, their titles are drawn smaller ...
PANEL_TITLE_PX = 11     # ... in this font size (px)
LIVE_POLL_S = 1.0       # how often the page checks a running run for new steps
FOLDER_POLL_S = 2.0     # how often it checks the runs folder for runs that started or went
CLOSE_ACC = 0.02        # held-out accuracies this close with and without recomputed statistics agree
_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_[]<>$~|#"})


def plain(text: str) -> str:
    """``text`` (a run name from a link, a path, an error message) shown as itself in Markdown:
    a name like ``[x](http://...)`` must not become a link, nor ``$...$`` a formula."""
    return str(text).translate(_MARKDOWN)


def code(text: str) -> str:
    """``text`` as inline code in Markdown, where nothing is interpreted (nor escaped: a path
    keeps its underscores)."""
    text = str(text).replace("\n", " ")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


# ----- the runs folder ----------------------------------------------------------------------------
def list_runs(root: Path) -> list[store.RunSummary]:
    """The runs under ``root``, newest first ([] for a missing folder)."""
    return store.list_runs(root) if root.is_dir() else []


def run_names(root: Path) -> tuple[str, ...]:
    """The names of the runs under ``root``, sorted (:func:`bnviz.store.run_names`: the listing's
    walk, without opening a run file)."""
    return store.run_names(root)


def age(updated: float, now: float | None = None) -> str:
    """How long ago a unix time was, as a person says it: "4 s ago", "12 min ago", "3 h ago",
    then the date and time."""
    seconds = max((time.time() if now is None else now) - updated, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(updated))


def runs_table(runs: list[store.RunSummary], now: float | None = None) -> list[dict[str, Any]]:
    """One row per run for the page's table (columns in display order)."""
    ranked = any(r.world_size > 1 for r in runs)
    rows = []
    for r in runs:
        row = {"run": r.name, "status": r.status, "last step": r.last_step,
               "layers": r.layers if r.error is None else None,
               "last update": age(r.updated, now) if r.updated else "-"}
        if ranked:
            row["rank"] = f"{r.rank} of {r.world_size}" if r.world_size > 1 else "-"
        row["problem"] = r.error or ""
        rows.append(row)
    return rows


def howto(root: Path) -> str:
    """What to do when the folder holds no run: the ``bnviz.watch`` lines, the example script,
    and where the page looks (Markdown)."""
    shown = root.as_posix()
    where = code(shown) + ("" if root.is_absolute() else f" ({code(root.resolve())})")
    state = "does not exist yet" if not root.exists() else "holds no runs yet"
    return (
        f"The runs folder {where} {state}. Record a run from your own training loop: one `bnviz.watch` "
        "around it and one `w.step(...)` per optimizer step.\n\n"
        "```python\n"
        "import bnviz\n"
        f"with bnviz.watch(model, \"{shown}/my-run\", every=20) as w:\n"
        "    for x, y in loader:\n"
        "        loss = loss_fn(model(x), y); opt.zero_grad(); loss.backward(); opt.step()\n"
        "        w.step(loss=loss.item())\n"
        "```\n\n"
        "Or record the example (a small ResNet on generated images, well under a minute on a laptop):\n\n"
        "```\n"
        f"python examples/watch_resnet.py --run-dir {shown}/resnet-example\n"
        "```\n\n"
        "This page looks in `$BNVIZ_RUNS_DIR`, else in `./runs` under the folder the app was started from; "
        "`bnviz app --runs DIR` sets it. A run appears here as soon as its first step is recorded, and is "
        "followed live while it trains."
    )


@dataclass(frozen=True)
class Selection:
    """Which run the page shows: ``name`` (one of ``options``), and why a requested name was not
    taken (``error``, Markdown-safe) if it was not."""

    name: str | None
    options: list[str]
    error: str | None = None


def select(root: Path, runs: list[store.RunSummary], requested: str | None) -> Selection:
    """The run to show for a name from the page's control or a link.

    A name must lie inside ``root`` (:func:`bnviz.store.resolve_run`: no "..", no absolute path,
    no symlink out). A name that is not listed but names a listed run's file (a distributed
    job's folder, whose rank 0 is ``job/rank-0``) picks that run; one deeper than the listing
    looks is added to the options. Anything else is refused with an error naming the folder,
    and the newest run that can be read is shown instead.
    """
    options = [r.name for r in runs]
    # The newest run that can be read: a damaged file (often the newest: a copy cut short) must not
    # hide the user's good runs behind an error when the page opens.
    newest = next((r.name for r in runs if r.error is None), options[0] if options else None)
    if not requested or requested in options:
        return Selection(requested or newest, options)
    try:
        folder = store.resolve_run(root, requested)
        file = store.open_run(folder).file.resolve()
    except (ValueError, FileNotFoundError, store.RunFileError) as exc:
        return Selection(newest, options, plain(str(exc)))
    for r in runs:
        if (r.path / store.RUN_FILE).resolve() == file:
            return Selection(r.name, options)
    return Selection(requested, options + [requested])


# ----- one run ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunData:
    """One commit of a recorded run, as the page draws it. Read-only: shared by sessions."""

    name: str
    file: Path
    meta: dict[str, Any]
    layers: list[LayerInfo]
    history: History                      # layer names as the model names its modules
    labelled: History                     # the same numbers, layers named for figures (layer_label)
    scalars: dict[str, tuple[np.ndarray, np.ndarray]]
    findings: list[Finding]

    @property
    def status(self) -> str:
        return self.meta["status"]

    @property
    def last_step(self) -> int | None:
        return self.meta.get("last_step")

    @property
    def steps(self) -> list[int]:
        """The recorded steps (snapshots), oldest first."""
        return list(self.history.snapshots.steps)

    @property
    def layer_names(self) -> list[str]:
        return list(self.history.layer_names)


_kept: OrderedDict[tuple, tuple[History, dict, list[Finding]]] = OrderedDict()
_lock = threading.Lock()


def progress(root: Path, name: str) -> tuple[int | None, str]:
    """(last step, status) of a run: what a live page compares to know whether to redraw."""
    meta = store.open_run(store.resolve_run(root, name)).meta
    return meta.get("last_step"), meta["status"]


def read_run(root: Path, name: str) -> RunData:
    """The run ``name`` under ``root`` as its last commit holds it.

    Raises ValueError for a name outside ``root`` or without a run, :class:`bnviz.store.RunFileError`
    for a file that is not a readable run, this version's or damaged (both name what is wrong). The history, scalars and
    doctor's findings of one commit are read once and kept (see the module's docstring).
    """
    run = store.open_run(store.resolve_run(root, name))
    meta = run.meta
    key = (str(run.file.resolve()), meta.get("created"), meta.get("updated"))
    with _lock:
        hit = _kept.get(key)
        if hit is not None:
            _kept.move_to_end(key)
    if hit is None:
        try:
            hit = (run.history(), {n: run.scalars(n) for n in run.scalar_names}, diagnose(run))
        except (TypeError, KeyError, IndexError) as exc:  # a file of another bnviz version, or damaged
            raise store.RunFileError(f"{run.file} could not be read as a bnviz run ({type(exc).__name__}: "
                                     f"{exc})") from exc
        with _lock:
            _kept[key] = hit
            while len(_kept) > KEPT:
                _kept.popitem(last=False)
    history, scalars, findings = hit
    labelled = dataclasses.replace(history, layer_names=[layer_label(info) for info in run.layers])
    return RunData(name=name, file=run.file, meta=meta, layers=list(run.layers), history=history,
                   labelled=labelled, scalars=scalars, findings=findings)


def layer_label(info: LayerInfo) -> str:
    """A layer's name in figures: its module name, with its kind when the name is only a position
    in an ``nn.Sequential`` ("1" says nothing; "1 (BatchNorm2d)" does)."""
    return f"{info.name} ({info.kind})" if info.name.isdigit() and info.kind else info.name


def layer_index(data: RunData, layer: str) -> int:
    """The index of layer ``layer`` (a name as the run records it); the default layer if unknown."""
    names = data.layer_names
    return names.index(layer) if layer in names else names.index(default_layer(data))


def default_layer(data: RunData) -> str:
    """The first layer the doctor has a problem or warning for, else the first norm layer, else
    the first layer."""
    flagged = [f.layer for f in data.findings if f.severity != "ok" and f.layer in data.layer_names]
    norms = [info.name for info in data.layers if info.family is not None]
    return (flagged or norms or data.layer_names)[0]


def default_tap(data: RunData) -> str:
    taps = data.history.taps
    return "norm_output" if "norm_output" in taps else taps[0]


def tap_note(data: RunData, layer: int, tap: str) -> str | None:
    """Why the chosen layer has nothing at ``tap``, if it has not (e.g. no activation module after
    a ResNet block's second BN: the ReLU comes after the residual addition)."""
    steps, _ = data.history.tap_series(layer, tap)
    if len(steps):
        return None
    info = data.layers[layer]
    why = ("it is followed by no activation module (or its output feeds something else first)"
           if tap in ("pre_activation", "post_activation") else "nothing was recorded there")
    return (f"Layer {info.name} has no {TAP_LABELS[tap]}: {why}. Pick another tap or layer for its percentile "
            "bands and histograms over training.")


def no_steps_note(data: RunData) -> str:
    """Why the run holds no recorded forward pass (Markdown): a model without a layer bnviz records,
    a run still before its first one, or one that ended before it."""
    if not data.layers:
        return ("This run records no layers: the model has no normalization or activation module that bnviz "
                "recognizes, so only the scalars passed to `w.step(...)` are kept (see the README, \"What is "
                "recorded\").")
    if data.status == "running":
        return "No forward pass recorded yet: the first one is recorded at step 0, the next every few steps."
    return (f"This run ended ({data.status}) before a forward pass was recorded: step 0 is recorded at the first "
            "forward pass in train mode (`model.train()`) inside `bnviz.watch`; forward passes in eval mode are "
            "not recorded.")


def running_note(data: RunData, layer: int) -> str | None:
    """Why the layer has no running statistics to compare, if it has none (LayerNorm, GroupNorm,
    InstanceNorm, RMSNorm, BatchNorm with track_running_stats=False); None for a layer that keeps
    them, or one without a normalization module."""
    info = data.layers[layer]
    if info.family is None or info.tracks_running_stats:
        return None
    how = OWN_STATISTICS.get(info.family, "normalizes with statistics of its own input")
    reference = ("" if info.family == "batch" else " The batch statistics below (each channel's mean and variance "
                 "over the batch) are for reference: they are not what this layer normalizes with.")
    return (f"Layer {info.name} ({info.kind}) keeps no running statistics: it {how}. Eval mode has no running "
            f"statistics that could drift from the batch ones.{reference}")


def histogram_layers(n: int, chosen: int) -> list[int]:
    """The layers the histogram figure shows: all of them up to :data:`MAX_PANELS`, else that many
    evenly spaced across depth, the chosen one among them."""
    if n <= MAX_PANELS:
        return list(range(n))
    picks = sorted({int(round(x)) for x in np.linspace(0, n - 1, MAX_PANELS)})
    if chosen not in picks:
        picks[int(np.argmin([abs(p - chosen) for p in picks]))] = chosen
    return sorted(set(picks))


def wrap(name: str, width: int = 14, after: str = ".") -> str:
    """A long module name on lines of about ``width`` characters, broken after its dots (and the
    other characters in ``after``), for a panel title: "layer2.0.<br>downsample.1"; with spaces,
    "12<br>(BatchNorm1d)"."""
    lines = [""]
    for c in after:
        name = name.replace(c, c + "\0")
    for part in name.split("\0"):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "<br>".join(line.rstrip() for line in lines)


def _at_step(history: History, step: int, layers: list[int]) -> History:
    """A History of one snapshot (the one nearest ``step``) and the given layers only, their
    names wrapped for narrow panels (at spaces too when there are many)."""
    after = ". " if len(layers) > CROWDED_PANELS else "."
    snap = history.snapshot_at(step)
    new = {old: i for i, old in enumerate(layers)}
    taps = {(new[layer], tap): st for (layer, tap), st in snap.taps.items() if layer in new}
    one = Snapshot(snap.step, taps, {})
    return History(config=None, layer_names=[wrap(history.layer_names[i], after=after) for i in layers], edges=history.edges,
                   snapshots=Thinned(1, steps=[snap.step], items=[one]), losses=Thinned(1), evals=Thinned(1))


def norm_state(data: RunData, layer: int, step: int) -> NormStats | None:
    """The norm layer's per-channel state at the recorded step nearest ``step``; None for a layer
    without a normalization module."""
    return data.history.snapshot_at(step).norms.get(layer)


def norm_series(data: RunData, layer: int, field: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, (S, C) values) of one per-channel array of a norm layer over the recorded steps;
    NaN rows where a step has none."""
    h = data.history
    channels = data.layers[layer].channels
    steps = np.asarray(h.snapshots.steps, dtype=np.int64)
    out = np.full((len(steps), channels), np.nan, dtype=np.float32)
    for i, snap in enumerate(h.snapshots):
        ns = snap.norms.get(layer)
        values = None if ns is None else getattr(ns, field)
        if values is not None and len(values) == channels:
            out[i] = values
    return steps, out


# ----- figures (one builder each: a display change redraws only its figure) ------------------------
def scalar_curves(data: RunData) -> go.Figure:
    return figs.scalar_curves(data.scalars, data.name)


def layer_histograms(data: RunData, *, step: int, tap: str, layer: int,
                     log_y: bool = False) -> tuple[go.Figure, list[str], list[str]]:
    """The histogram figure at ``step``, the names of the layers it shows, and of those among them
    with nothing at ``tap`` (an empty panel)."""
    shown = histogram_layers(len(data.layer_names), layer)
    sub = _at_step(data.labelled, step, shown)
    empty = [data.layer_names[i] for j, i in enumerate(shown) if (j, tap) not in sub.snapshots[0].taps]
    fig = act_figs.layer_histograms({data.name: sub}, sub.snapshots.steps[0], tap, log_y=log_y)
    # One run: the page's heading names it, and a legend of one entry would sit on the panel titles.
    fig.update_layout(showlegend=False)
    if len(shown) > CROWDED_PANELS:   # titles in narrow panels: "12<br>(BatchNorm1d)" must fit one
        titles = set(sub.layer_names)
        fig.for_each_annotation(lambda a: a.update(font_size=PANEL_TITLE_PX) if a.text in titles else None)
    return fig, [data.layer_names[i] for i in shown], empty


def percentile_bands(data: RunData, *, layer: int, tap: str) -> go.Figure:
    return act_figs.percentile_bands({data.name: data.labelled}, layer, tap)


def histogram_heatmap(data: RunData, *, layer: int, tap: str, log_color: bool = True) -> go.Figure:
    return act_figs.histogram_heatmap({data.name: data.labelled}, layer, tap, log_color=log_color)


def batch_vs_running(data: RunData, *, layer: int, step: int) -> go.Figure | None:
    """None for a layer without a normalization module."""
    ns = norm_state(data, layer, step)
    if ns is None:
        return None
    info = data.layers[layer]
    return figs.batch_vs_running(ns, layer_label(info), data.history.snapshot_at(step).step,
                                 keeps_running=info.tracks_running_stats, normalizes_with_batch=info.family == "batch")


def gamma_beta(data: RunData, *, layer: int) -> go.Figure | None:
    """None for a layer without gamma and beta (no norm module, or ``affine=False``)."""
    info = data.layers[layer]
    if info.family is None or not info.affine:
        return None
    steps, weight = norm_series(data, layer, "weight")
    _, bias = norm_series(data, layer, "bias")
    return figs.gamma_beta(steps, weight, bias, layer_label(info))


def evidence(finding: Finding) -> go.Figure:
    return figs.finding_evidence(finding)


def make_figures(data: RunData) -> dict[str, go.Figure]:
    """Every figure of the page at its default display settings (last recorded step, default layer
    and tap), by chart name; the doctor's evidence for each finding that is not ok."""
    out: dict[str, go.Figure] = {"logged scalars": scalar_curves(data)}
    if data.steps:
        layer, tap, step = layer_index(data, default_layer(data)), default_tap(data), data.steps[-1]
        out["layer histograms"] = layer_histograms(data, step=step, tap=tap, layer=layer)[0]
        if tap_note(data, layer, tap) is None:
            out["percentile bands"] = percentile_bands(data, layer=layer, tap=tap)
            out["histograms over training"] = histogram_heatmap(data, layer=layer, tap=tap)
        for name, fig in (("batch vs running statistics", batch_vs_running(data, layer=layer, step=step)),
                          ("gamma and beta", gamma_beta(data, layer=layer))):
            if fig is not None:
                out[name] = fig
    for f in alerts(data.findings):
        if f.series:
            out[evidence_name(f)] = evidence(f)
    return out


# ----- the doctor ----------------------------------------------------------------------------------
def alerts(findings: list[Finding]) -> list[Finding]:
    """Problems, then warnings (diagnose's order)."""
    return [f for f in findings if f.severity != "ok"]


def evidence_name(f: Finding) -> str:
    return f"doctor {f.check} {f.layer or 'run'}"


def quiet_rows(findings: list[Finding]) -> list[dict[str, str]]:
    """The checks that found nothing, one row each: what was checked, where, and the numbers."""
    return [{"check": CHECKS.get(f.check, f.check), "layer": f.layer or "-", "evidence": f.evidence}
            for f in findings if f.severity == "ok"]


def holdout_summary(data: RunData) -> str | None:
    """The last held-out accuracy with the running statistics and with them recomputed, if the
    run was watched with ``holdout=``."""
    if not {"holdout_acc", "holdout_precise_acc"} <= set(data.scalars):
        return None
    steps, acc = data.scalars["holdout_acc"]
    _, precise = data.scalars["holdout_precise_acc"]
    gap = precise[-1] - acc[-1]
    verdict = (f"within {CLOSE_ACC * 100:.0f} points: the running statistics are not what holds eval mode back"
               if abs(gap) <= CLOSE_ACC else
               f"{abs(gap) * 100:.1f} points {'better' if gap > 0 else 'worse'} recomputed: the running statistics "
               + ("are off (see the doctor below)" if gap > 0 else "do better than a recomputation from a few batches"))
    return (f"Held-out accuracy at step {int(steps[-1])}: {acc[-1]:.1%} in eval mode with BN's running statistics, "
            f"{precise[-1]:.1%} with them recomputed at the same weights from recent training batches (precise "
            f"BN); {verdict}.")
