"""Server-side PNG export (``bnviz.export.figure_png``): per figure with the persistent browser,
and the first figure of a process, which includes starting Chromium.

The figures are the app's own: the home page's training curves and a per-layer histogram of the
same short runs, at the width the "Download PNG" button asks for (900 px, scale 2).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import ROOT, Result, spread

WIDTH = 900


def _figures(quick: bool) -> dict:
    from bnviz import figures
    from bnviz.config import Config
    from bnviz.train import train
    from bnviz.views import home
    config = Config(steps=100 if quick else 300)
    runs = {label: train(cfg) for label, cfg in home.runs(config).items()}
    histories = {label: run.history for label, run in runs.items()}
    return {"training curves": figures.training_curves(histories),
            "layer histograms": figures.layer_histograms(histories, step=config.steps - 1, tap="post_activation")}


def _first_png_in_fresh_process(fig_json: str) -> float:
    """Seconds of the first figure_png call of a new Python process (imports excluded)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(fig_json)
    code = (
        "import sys, time, plotly.io as pio\n"
        "from bnviz import export\n"
        f"fig = pio.read_json({f.name!r})\n"
        "t = time.perf_counter(); export.figure_png(fig, width=900); print(time.perf_counter() - t)\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        if out.returncode != 0:
            raise RuntimeError(f"first-PNG subprocess failed: {out.stderr[-2000:]}")
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        Path(f.name).unlink(missing_ok=True)


def _browser_cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by the export browser's process tree (nan when unknown)."""
    try:
        import psutil
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total
    except Exception:  # noqa: BLE001 - a missing breakdown must not lose the timing
        return float("nan")


def png_export(quick: bool) -> list[Result]:
    from bnviz import export
    figs = _figures(quick)
    order = list(figs.values())
    start = time.perf_counter()
    first = export.figure_png(order[0], width=WIDTH)    # in-process first call: starts the browser
    lazy = [time.perf_counter() - start]
    renders = 2 if quick else 20
    pid = export.browser_pid()
    times, browser_cpu, sizes = [], [], {}
    for i in range(renders):
        name = list(figs)[i % len(figs)]
        cpu, start = _browser_cpu_s(pid), time.perf_counter()
        png = export.figure_png(figs[name], width=WIDTH)
        times.append(time.perf_counter() - start)
        browser_cpu.append(_browser_cpu_s(pid) - cpu)
        sizes[name] = len(png)
    if not quick:
        lazy += [_first_png_in_fresh_process(order[0].to_json()) for _ in range(3)]
    per_figure = {name: spread(times[i::len(figs)]) for i, name in enumerate(figs)}
    return [
        Result("export_png_s", times, "s",
               f"figure_png(fig, width={WIDTH}) per figure after the first (persistent browser); median of "
               f"{renders} renders of the app's figures", target=0.5,
               detail={"per_figure_s": per_figure, "browser_cpu_s_per_png": spread(browser_cpu),
                       "png_bytes": sizes, "first_png_bytes": len(first)}),
        Result("lazy_export_first_png_s", lazy, "s",
               "first figure_png of a process, browser start included (imports excluded); in-process first "
               "call plus fresh processes"),
    ]


def run(quick: bool) -> list[Result]:
    return png_export(quick)
