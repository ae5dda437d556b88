"""Server-side PNG export (``bnviz.export.figure_png``): per figure with the persistent browser,
and the first figure of a process, which includes starting Chromium; one SVG and one PDF export;
the GIF of the histograms over training (``bnviz.animate``).

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


def _histories(quick: bool) -> dict:
    from bnviz.config import Config
    from bnviz.train import train
    from bnviz.views import home
    config = Config(steps=100 if quick else 300)
    return {label: train(cfg).history for label, cfg in home.runs(config).items()}


def _figures(histories: dict) -> dict:
    from bnviz import figures
    last = next(iter(histories.values())).snapshots.steps[-1]
    return {"training curves": figures.training_curves(histories),
            "layer histograms": figures.layer_histograms(histories, step=last, tap="post_activation")}


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


def png_export(quick: bool, figs: dict) -> list[Result]:
    from bnviz import export
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


def vector_export(quick: bool, figs: dict) -> list[Result]:
    """One SVG and one PDF of the layer histograms (the browser is running by now)."""
    from bnviz import export
    fig = figs["layer histograms"]
    results = []
    for fmt in ("svg", "pdf"):
        times, size = [], 0
        for _ in range(2 if quick else 10):
            start = time.perf_counter()
            size = len(export.figure_image(fig, fmt, width=WIDTH))
            times.append(time.perf_counter() - start)
        results.append(Result(f"export_{fmt}_s", times, "s",
                              f"figure_image(fig, {fmt!r}, width={WIDTH}) of the layer histograms, persistent browser; "
                              f"median of {len(times)}", detail={"bytes": size}))
    return results


def gif_export(quick: bool, histories: dict) -> list[Result]:
    """The GIF of the layer histograms over training as the histograms page makes it: frames drawn
    with numpy and Pillow. For comparison (not quick), the same frames rendered as figures by the
    browser in one batch, the alternative bnviz.animate does not take."""
    from bnviz import animate, export
    from bnviz.figures import activations
    anim = animate.histogram_animation(histories, "pre_activation")
    times = []
    for _ in range(2 if quick else 5):
        start = time.perf_counter()
        data = animate.gif(anim)
        times.append(time.perf_counter() - start)
    detail = {"frames": len(anim.steps), "gif_bytes": len(data), "per_frame_ms": round(1000 * min(times) / len(anim.steps), 1)}
    if animate.mp4_available():
        start = time.perf_counter()
        animate.mp4(anim)
        detail["mp4_s"] = round(time.perf_counter() - start, 3)
    if not quick:
        start = time.perf_counter()
        export.figure_images([(activations.layer_histograms(histories, s, "pre_activation"), "png")
                              for s in anim.steps], width=WIDTH, scale=1)
        detail["kaleido_frames_s"] = round(time.perf_counter() - start, 3)
    return [Result("animation_gif_s", times, "s",
                   f"animate.gif of the layer histograms over training ({len(anim.steps)} frames, "
                   f"{animate.SIZE[0]}x{animate.SIZE[1]}), drawn from the recorded counts; median of {len(times)}",
                   detail=detail)]


def run(quick: bool) -> list[Result]:
    histories = _histories(quick)
    figs = _figures(histories)
    return png_export(quick, figs) + vector_export(quick, figs) + gif_export(quick, histories)
