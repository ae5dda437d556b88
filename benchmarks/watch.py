"""Watching your own model: what ``bnviz.watch`` costs a real training loop, and how fast a long
run opens.

- ``watch_overhead_resnet18``: a ResNet-18 (torchvision's layout for 32x32 inputs, 20 BatchNorm2d
  layers, 11.2 M parameters; the model of ``examples/watch_resnet.py``), batch 8 of 3x32x32,
  SGD with momentum, one torch thread. A watched run (``bnviz.watch(model, dir, every=20)``, one
  ``w.step(loss=...)`` per step) over the same run without bnviz: same initial weights, same
  batches, same number of steps; CPU time of pairs of runs made in lockstep (a step of one, a step
  of the other, the order alternating), so both see the same load at the same moments. The watched side
  pays for everything a user pays for: making the watch, the hooks and copies of the recorded
  forward passes, the summaries, the SQLite writes and commits, the per-step scalar, closing.
  The detail splits one recorded step into its parts, measured step by step inside a separate
  watched run.
- ``open_run_50k_s``: a 50,000-step watched run of a small BN MLP (snapshots every 20 steps, the
  loss every step; made once, outside the timing) is opened as the app opens a run:
  ``bnviz.open_run(dir)``, ``run.history()`` and the first figure drawn from it
  (``figures.activations.layer_histograms`` at the last recorded step). Each repeat is a fresh
  Python process, so nothing is cached in memory; the key is the time of those three calls in
  that process once its imports are done, and the detail has the whole cold process (Python
  start, imports of torch, numpy and plotly, and the work) as a user's ``python -c`` would see it.
"""
from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

from . import ROOT, Result, Timings, ratios, spread

EXAMPLES = ROOT / "examples"
EVERY = 20
BATCH = 8


def _example() -> Any:
    """examples/watch_resnet.py as a module (examples/ is a folder of scripts, not a package)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import watch_resnet
    return watch_resnet


# ----- watch_overhead_resnet18 ----------------------------------------------------------------------
def _paired(template: nn.Module, batches: list, run_dir: Path, rounds: int) -> tuple[Timings, dict[str, list[list[float]]]]:
    """``rounds`` pairs of runs, watched and bare, each from a copy of ``template`` (made outside
    the timing) over ``batches``: the user's loop (forward, loss, backward, SGD step, read the
    loss; ``w.step(loss=...)`` when watched).

    The two runs of a pair go in lockstep: one step of each in turn, the order alternating step
    by step (A B, B A, ...), each step timed on its own. On this shared machine a whole run's CPU
    time moves by +-15 % with the load of the moment; side by side step by step, both runs see
    the same moments. The watched run's total includes making the watch (before its first step)
    and closing it (after its last).
    """
    import bnviz

    names = ("watched", "bare")
    t = Timings({n: [] for n in names}, {n: [] for n in names})
    per_step: dict[str, list[list[float]]] = {n: [] for n in names}
    for r in range(rounds):
        models = {n: copy.deepcopy(template).train() for n in names}
        opts = {n: torch.optim.SGD(models[n].parameters(), lr=0.02, momentum=0.9) for n in names}
        cpu, wall = {n: 0.0 for n in names}, {n: 0.0 for n in names}
        steps: dict[str, list[float]] = {n: [] for n in names}

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            w0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            c = time.process_time() - c0
            cpu[name] += c
            wall[name] += time.perf_counter() - w0
            return out, c

        w, _ = timed("watched", lambda: bnviz.watch(models["watched"], run_dir, every=EVERY, overwrite=True))
        for i, (xb, yb) in enumerate(batches):
            for name in (names if (i + r) % 2 == 0 else names[::-1]):
                model, opt = models[name], opts[name]

                def step() -> None:
                    loss = F.cross_entropy(model(xb), yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    value = loss.item()
                    if name == "watched":
                        w.step(loss=value)

                steps[name].append(timed(name, step)[1])
        timed("watched", w.close)
        for n in names:
            t.cpu[n].append(cpu[n])
            t.wall[n].append(wall[n])
            per_step[n].append(steps[n])
    return t, per_step


def _recorded_step_parts(template: nn.Module, batches: list, run_dir: Path) -> dict[str, Any]:
    """One watched run timed part by part (CPU ms): the forward pass (armed or not), backward and
    optimizer step, and ``w.step``; inside ``w.step`` of a recorded step, the recorder's summaries
    (``Recorder.collect``: edges at the first, ``_tap_stats``, ``_norm_stats``) and the run
    store's writes."""
    import bnviz
    from bnviz import recorder
    from bnviz.recorder import Recorder
    from bnviz.store import RunWriter

    spent: dict[str, float] = {}

    def timed(key: str, fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] = spent.get(key, 0.0) + time.process_time() - start
        return wrapper

    patches = [mock.patch.object(Recorder, "collect", timed("collect", Recorder.collect)),
               mock.patch.object(Recorder, "_tap_stats", timed("tap_stats", Recorder._tap_stats)),
               mock.patch.object(Recorder, "_norm_stats", timed("norm_stats", Recorder._norm_stats)),
               mock.patch.object(recorder, "choose_edges", timed("choose_edges", recorder.choose_edges)),
               mock.patch.object(RunWriter, "add_snapshot", timed("store_snapshot", RunWriter.add_snapshot)),
               mock.patch.object(RunWriter, "commit", timed("store_commit", RunWriter.commit)),
               mock.patch.object(RunWriter, "add_scalars", timed("store_scalars", RunWriter.add_scalars))]
    model = copy.deepcopy(template)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    rows: list[dict[str, float]] = []
    for p in patches:
        p.start()
    try:
        with bnviz.watch(model, run_dir, every=EVERY, overwrite=True) as w:
            model.train()
            for xb, yb in batches:
                spent.clear()
                recorded = w.recorder.armed
                t0 = time.process_time()
                loss = F.cross_entropy(model(xb), yb)
                t1 = time.process_time()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                t2 = time.process_time()
                w.step(loss=loss.item())
                t3 = time.process_time()
                rows.append({"recorded": recorded, "forward": t1 - t0, "backward_and_sgd": t2 - t1,
                             "w_step": t3 - t2, **spent})
    finally:
        for p in patches:
            p.stop()

    def med(rs: list[dict[str, float]], key: str) -> float:
        return round(statistics.median(r.get(key, 0.0) for r in rs) * 1e3, 2) if rs else float("nan")

    first, later = rows[0], [r for r in rows[1:] if r["recorded"]]
    plain = [r for r in rows if not r["recorded"]]
    keys = ("forward", "backward_and_sgd", "w_step", "collect", "choose_edges", "tap_stats", "norm_stats",
            "store_snapshot", "store_commit", "store_scalars")
    return {"recorded_steps": 1 + len(later), "unrecorded_steps": len(plain),
            "recorded_step_ms": {k: med(later, k) for k in keys},
            "unrecorded_step_ms": {k: med(plain, k) for k in keys},
            "first_recorded_step_ms": {k: round(first.get(k, 0.0) * 1e3, 2) for k in keys}}


def watch_overhead_resnet18(quick: bool) -> Result:
    torch.set_num_threads(1)
    ex = _example()
    torch.manual_seed(0)
    if quick:   # checks the code only: a small net, few steps
        template, steps, rounds = ex.resnet(blocks=(1, 1), widths=(8, 16)), 2 * EVERY + 1, 2
    else:
        template, steps, rounds = ex.resnet(), 2 * EVERY, 7
    x, y = ex.gratings(steps * BATCH, seed=1)
    batches = list(zip(x.split(BATCH), y.split(BATCH)))
    with tempfile.TemporaryDirectory(prefix="bnviz-bench-watch-") as tmp:
        run_dir = Path(tmp) / "run"
        _paired(template, batches[:4], run_dir, 1)                       # warm-up: first-call costs
        t, per_step = _paired(template, batches, run_dir, rounds)
        parts = _recorded_step_parts(template, batches, run_dir)
    norms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in template.modules())
    recorded_at = [s for s in range(steps) if s % EVERY == 0]

    def step_ms(name: str, which: Callable[[int], bool]) -> float:
        return round(statistics.median(v for run in per_step[name] for s, v in enumerate(run) if which(s)) * 1e3, 2)

    bare_ms = step_ms("bare", lambda s: True)
    plain_ms = step_ms("watched", lambda s: s % EVERY != 0)
    recorded_ms = step_ms("watched", lambda s: s % EVERY == 0 and s > 0)
    first_ms = step_ms("watched", lambda s: s == 0)
    return Result(
        "watch_overhead_resnet18", ratios(t.cpu["watched"], t.cpu["bare"]), "x",
        f"{'a 2-stage ResNet (quick mode)' if quick else 'ResNet-18'} (32x32, batch {BATCH}) trained under bnviz.watch(every={EVERY}) / the same loop without it "
        f"({steps} steps, {len(recorded_at)} recorded); CPU time, median of {rounds} pairs of runs in lockstep",
        target=1.10,
        detail={"wall_ratio": spread(ratios(t.wall["watched"], t.wall["bare"])),
                "watched_cpu_s": spread(t.cpu["watched"]), "bare_cpu_s": spread(t.cpu["bare"]),
                "steps": steps, "every": EVERY, "batch": BATCH, "recorded_steps": recorded_at,
                "norm_layers": norms, "parameters": sum(p.numel() for p in template.parameters()),
                "step_cpu_ms": {"bare": bare_ms, "watched_unrecorded": plain_ms,
                                "watched_recorded": recorded_ms, "watched_first_recorded": first_ms},
                # What one snapshot costs: a recorded step less an unrecorded one of the same runs
                # (the first also chooses the histogram edges and creates the run file).
                "snapshot_cpu_ms": round(recorded_ms - plain_ms, 2),
                "unrecorded_vs_bare": round(plain_ms / bare_ms, 3),    # the same work: ~1 unless the pairing fails
                "first_snapshot_cpu_ms": round(first_ms - plain_ms, 2),
                # The ratio those median step times give for these runs (a median leaves out the
                # steps the machine's load disturbed), and for a long run, where the first
                # snapshot's extra cost is spread thin: 1 + snapshot / (every x step).
                "predicted_from_steps": round(
                    1 + (first_ms - plain_ms + (len(recorded_at) - 1) * (recorded_ms - plain_ms)) / (steps * plain_ms), 3),
                "predicted_long_run": round(1 + (recorded_ms - plain_ms) / (EVERY * plain_ms), 3),
                "parts_of_a_step": parts})


# ----- open_run_50k_s ---------------------------------------------------------------------------------
def make_long_run(run_dir: Path, steps: int, every: int = EVERY, batch: int = 64, width: int = 100) -> dict[str, Any]:
    """A watched run of ``steps`` steps of a small BN MLP on a fixed synthetic task (10 classes of
    a random linear teacher): snapshots every ``every`` steps (thinned by the store as it grows),
    the loss and the batch accuracy every step. Returns what it took to make."""
    import bnviz

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 64, generator=g)
    y = (x @ torch.randn(64, 10, generator=g)).argmax(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, width), nn.BatchNorm1d(width), nn.ReLU(),
                          nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(),
                          nn.Linear(width, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    order = torch.randint(0, len(x), (steps, batch), generator=g)
    start = time.perf_counter()
    with bnviz.watch(model, run_dir, every=every, overwrite=True) as w:
        for idx in order:
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            w.step(loss=loss.item(), acc=(logits.argmax(1) == y[idx]).float().mean().item())
    files = sorted(run_dir.iterdir())
    return {"make_s": round(time.perf_counter() - start, 1), "steps": steps, "every": every,
            "file_bytes": sum(f.stat().st_size for f in files), "files": [f.name for f in files]}


# Run in a fresh process per repeat: imports first (timed apart), then what the app does to show a run.
_OPEN = r"""
import json, sys, time
t0 = time.perf_counter()
import bnviz
from bnviz.store import open_run
from bnviz.figures.activations import layer_histograms, percentile_bands
t1 = time.perf_counter(); c1 = time.process_time()
run = open_run(sys.argv[1])
t2 = time.perf_counter()
history = run.history()
t3 = time.perf_counter()
fig = layer_histograms({"run": history}, history.snapshots.steps[-1], "norm_output")
t4 = time.perf_counter(); c4 = time.process_time()
bands = percentile_bands({"run": history}, 0, "norm_output")
t5 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "history_s": t3 - t2, "figure_s": t4 - t3,
                  "cpu_s": c4 - c1, "bands_figure_s": t5 - t4, "snapshots": len(history.snapshots),
                  "losses": len(history.losses), "layers": len(history.layer_names),
                  "traces": len(fig.data)}))
"""


def open_run_50k(quick: bool) -> Result:
    steps = 300 if quick else 50_000
    repeats = 2 if quick else 7
    with tempfile.TemporaryDirectory(prefix="bnviz-bench-open-") as tmp:
        run_dir = Path(tmp) / "long-run"
        made = make_long_run(run_dir, steps)
        samples, seen, cold = [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", _OPEN, str(run_dir)], cwd=ROOT, text=True,
                                 capture_output=True, timeout=300)
            cold.append(time.perf_counter() - start)
            if out.returncode != 0:
                raise RuntimeError(f"opening the run failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            seen.append(r)
            samples.append(r["open_s"] + r["history_s"] + r["figure_s"])
    last = seen[-1]
    return Result(
        "open_run_50k_s", samples, "s",
        f"bnviz.open_run + run.history() + the first figure (layer histograms) of a {steps:,}-step watched run "
        f"(BN MLP, snapshots every {EVERY} steps, loss every step); fresh process per repeat, imports excluded; "
        f"wall time, median of {repeats}",
        target=2.0,
        detail={"open_s": spread([r["open_s"] for r in seen]), "history_s": spread([r["history_s"] for r in seen]),
                "figure_s": spread([r["figure_s"] for r in seen]), "cpu_s": spread([r["cpu_s"] for r in seen]),
                "percentile_bands_s": spread([r["bands_figure_s"] for r in seen]),
                "import_s": spread([r["import_s"] for r in seen]), "cold_process_s": spread(cold),
                "kept": {k: last[k] for k in ("snapshots", "losses", "layers")}, "run": made})


def run(quick: bool) -> list[Result]:
    return [watch_overhead_resnet18(quick), open_run_50k(quick)]
