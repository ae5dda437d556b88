"""bnviz.export: PNG via one shared Chromium, tidy CSV, ZIP bundles, modebar config (SVG, PDF,
batches and the presentation style: tests/test_export_formats.py)."""

import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from bnviz import export
from bnviz.export import (
    CHROMIUM_HELP,
    ExportUnavailable,
    browser_pid,
    chromium_path,
    figure_csv,
    figure_png,
    figures_zip,
    modebar_config,
    safe_filename,
)

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

needs_browser = pytest.mark.skipif(chromium_path() is None, reason=CHROMIUM_HELP)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which the PNG spec requires to come first."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def scatter(seed: int = 0, **layout) -> go.Figure:
    ys = np.random.default_rng(seed).normal(size=20)
    return go.Figure(go.Scatter(y=ys, name="loss"), layout=dict(title=f"run {seed}", **layout))


@pytest.fixture
def no_browser(monkeypatch, tmp_path):
    """A fresh, never-started export server with no browser to be found.

    The shared server may already be up in this process (then it would never look for a
    browser again), so swap in a new one instead of spawning a subprocess.
    """
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    server = export._BrowserServer()
    monkeypatch.setattr(export, "_server", server)
    yield server
    server.stop()


# --- processes: /proc helpers, and a fresh interpreter that crashes its browser and exits ---


def children(pid: int) -> set[int]:
    """Direct children of ``pid`` (from /proc; empty once it is gone)."""
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids |= {int(k) for k in (task / "children").read_text().split()}
        except OSError:
            continue
    return kids


def process_tree(pid: int) -> set[int]:
    """``pid`` and everything below it."""
    found, todo = {pid}, [pid]
    while todo:
        new = children(todo.pop()) - found
        found |= new
        todo += new
    return found


def alive(pid: int) -> bool:
    """Running and not a zombie (PID 1 in a container may reap zombies late)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


CHILD = """
import json, os, signal, sys
import plotly.graph_objects as go
from bnviz import export
from tests.test_export import children, png_size, process_tree

def run():
    size = png_size(export.figure_png(go.Figure(go.Bar(y=[1, 2])), width=321, height=123, scale=1))
    pid = export.browser_pid()
    return {"size": size, "pid": pid, "tree": sorted(process_tree(pid)),
            "profile": str(export._server._kaleido._browser_impl.tmp_dir.path)}

first = run()
os.kill(min(children(first["pid"])), signal.SIGKILL)  # Chromium's main process "crashes"
second = run()
print(json.dumps({"first": first, "second": second, "streamlit": "streamlit" in sys.modules}))
"""


@pytest.fixture(scope="module")
def fresh_interpreter():
    """A child Python that exports, has its Chromium killed, exports again, then exits.

    Started by the first PNG test and read by the last test of this file, so its two browser
    start-ups overlap with the tests in between instead of adding to the file's run time.
    """
    if chromium_path() is None or not Path("/proc/self/task").is_dir():
        yield None
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    yield child
    if child.poll() is None:
        child.kill()
        child.communicate()


# --- PNG -----------------------------------------------------------------------------------


@needs_browser
def test_png_size_follows_layout_then_arguments_then_default(fresh_interpreter):
    # (fresh_interpreter is requested here only to start that child early.)
    sized = scatter(width=400, height=300)
    assert png_size(figure_png(sized)) == (800, 600)  # default scale 2
    assert png_size(figure_png(sized, width=500, height=250, scale=1)) == (500, 250)
    assert png_size(figure_png(scatter(), scale=1)) == (900, 500)


@needs_browser
def test_different_figures_give_different_pngs():
    assert figure_png(scatter(1), scale=1) != figure_png(scatter(2), scale=1)


@needs_browser
def test_later_calls_reuse_the_same_browser_process():
    figure_png(scatter(3), scale=1)
    pid, kaleido = browser_pid(), export._server._kaleido
    assert pid is not None
    os.kill(pid, 0)  # alive
    for seed in (4, 5):
        figure_png(scatter(seed), scale=1)
        assert browser_pid() == pid
        assert export._server._kaleido is kaleido


@needs_browser
def test_concurrent_exports_each_get_their_own_png():
    # Distinct widths per thread, so a caller handed another caller's image would notice
    # (kaleido's own sync server can mix results up across threads).
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = figure_png(scatter(i), width=300 + 20 * i, height=200, scale=1)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert {i: png_size(b) for i, b in results.items()} == {i: (300 + 20 * i, 200) for i in range(4)}


def test_missing_browser_raises_with_help(no_browser, monkeypatch):
    assert chromium_path() is None
    with pytest.raises(ExportUnavailable) as info:
        figure_png(scatter())
    assert CHROMIUM_HELP in str(info.value)
    assert "sudo apt-get install -y chromium" in str(info.value)
    assert "camera icon" in str(info.value)

    monkeypatch.setenv("BROWSER_PATH", "/nowhere/chromium")
    assert chromium_path() is None  # a bad override is reported, not silently skipped
    with pytest.raises(ExportUnavailable, match="BROWSER_PATH='/nowhere/chromium'"):
        figure_png(scatter())


def test_browser_that_fails_to_start_raises_with_help(no_browser, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", "/bin/false")  # exists, executable, exits at once
    with pytest.raises(ExportUnavailable, match="failed to start") as info:
        figure_png(scatter())
    assert CHROMIUM_HELP in str(info.value)
    assert no_browser.pid() is None


# --- CSV -----------------------------------------------------------------------------------


def read_csv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


def test_csv_scatter_with_and_without_x():
    fig = go.Figure(
        [
            go.Scatter(x=[0.5, 1.5, 2.5], y=[3.0, 1.0, 2.0], name="val"),
            go.Scatter(y=[7.0, 8.0], name="train"),  # no x: plotted at 0, 1
            go.Scatter(y=[1.0, 2.0]),  # unnamed
        ]
    )
    df = read_csv(figure_csv(fig))
    assert list(df.columns) == ["trace", "x", "y"]
    assert list(df["trace"]) == ["val"] * 3 + ["train"] * 2 + ["trace 2"] * 2
    np.testing.assert_allclose(df["x"], [0.5, 1.5, 2.5, 0, 1, 0, 1])
    np.testing.assert_allclose(df["y"], [3, 1, 2, 7, 8, 1, 2])


def test_csv_histogram_keeps_raw_samples_and_bar_keeps_categories():
    samples = np.random.default_rng(0).normal(size=50)
    fig = go.Figure([go.Histogram(x=samples, name="h"), go.Bar(x=["a", "b"], y=[3, 4], name="b")])
    df = read_csv(figure_csv(fig))
    hist, bar = df[df.trace == "h"], df[df.trace == "b"]
    np.testing.assert_allclose(hist["x"].astype(float), samples)
    assert hist["y"].isna().all()
    assert list(bar["x"]) == ["a", "b"] and list(bar["y"]) == [3, 4]


def test_csv_heatmap_is_long_format():
    z = np.arange(6.0).reshape(2, 3)  # 2 rows (y) x 3 columns (x)
    fig = go.Figure(go.Heatmap(z=z, x=["c1", "c2", "c3"], y=[10, 20], name="w"))
    df = read_csv(figure_csv(fig))
    assert list(df.columns) == ["trace", "x", "y", "z"]
    assert len(df) == z.size
    for row in df.itertuples():
        i, j = [10, 20].index(row.y), ["c1", "c2", "c3"].index(row.x)
        assert row.z == z[i, j]
    # Without x/y, cells are at index positions, as plotly.js draws them.
    df = read_csv(figure_csv(go.Figure(go.Heatmap(z=z))))
    assert list(zip(df.x, df.y, df.z)) == [(j, i, z[i, j]) for i in range(2) for j in range(3)]


def test_csv_repeated_trace_names_stay_distinguishable():
    fig = go.Figure([go.Scatter(y=[1], name="a"), go.Scatter(y=[2], name="a")])
    assert list(read_csv(figure_csv(fig)).trace) == ["a", "a (2)"]


# --- ZIP -----------------------------------------------------------------------------------


def bar(values) -> go.Figure:
    return go.Figure(go.Bar(x=["p", "q"], y=values, name="v"))


@needs_browser
def test_zip_has_every_image_format_and_csv_per_figure_and_readme():
    figures = {"Loss curve": scatter(7), "Loss  curve!": bar([1, 2]), "γ": bar([3, 4])}
    gif = b"GIF89a-an-animation"
    with zipfile.ZipFile(io.BytesIO(figures_zip(figures, extra={"anim.gif": gif}))) as archive:
        names = archive.namelist()
        stems = ["loss-curve", "loss-curve-2", "figure"]
        assert sorted(names) == sorted(
            [f"{s}.{ext}" for s in stems for ext in ("png", "svg", "pdf", "csv")] + ["anim.gif", "README.txt"]
        )
        for stem in stems:
            assert archive.read(f"{stem}.png")[:8] == PNG_SIGNATURE
            assert b"<svg" in archive.read(f"{stem}.svg")[:200]
            assert archive.read(f"{stem}.pdf")[:5] == b"%PDF-"
        assert archive.read("anim.gif") == gif
        assert list(read_csv(archive.read("loss-curve-2.csv").decode()).y) == [1, 2]
        assert read_csv(archive.read("loss-curve.csv").decode()).y.tolist() == pytest.approx(
            list(figures["Loss curve"].data[0].y)
        )
        readme = archive.read("README.txt").decode()
    assert all(f"{s}.{ext}" in readme for s in stems for ext in ("png", "svg", "pdf", "csv"))
    assert "anim.gif" in readme and "missing" not in readme


def test_zip_without_browser_still_has_csvs_and_explains(no_browser):
    data = figures_zip({"A": bar([1, 2]), "B": bar([5, 6])})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["README.txt", "a.csv", "b.csv"]
        assert list(read_csv(archive.read("b.csv").decode()).y) == [5, 6]
        readme = archive.read("README.txt").decode()
    assert CHROMIUM_HELP in readme and "PNG/SVG/PDF images are missing" in readme


def test_zip_without_images_never_touches_the_browser(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the browser was asked for an image")

    monkeypatch.setattr(export, "figure_images", boom)
    with zipfile.ZipFile(io.BytesIO(figures_zip({"x": bar([1, 2])}, images=()))) as archive:
        assert sorted(archive.namelist()) == ["README.txt", "x.csv"]
        assert "not requested" in archive.read("README.txt").decode()


# --- small helpers ---------------------------------------------------------------------------


def test_modebar_config():
    assert modebar_config("BN: γ / β, layer 2") == {
        "toImageButtonOptions": {"format": "png", "filename": "bn-layer-2", "scale": 2},
        "displaylogo": False,
    }
    assert modebar_config("x", scale=4)["toImageButtonOptions"]["scale"] == 4


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Loss vs Step", "loss-vs-step"),
        ("  Café -- déjà vu!! ", "cafe-deja-vu"),
        ("a/b\\c:d", "a-b-c-d"),
        ("", "figure"),
        ("γβ!!", "figure"),
        ("x" * 200, "x" * 80),
        ("a" * 79 + " b", "a" * 79),  # no trailing dash after truncation
    ],
)
def test_safe_filename(title, expected):
    assert safe_filename(title) == expected


def test_chromium_path_honours_browser_path(monkeypatch, tmp_path):
    fake = tmp_path / "my-chrome"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert chromium_path() == str(fake)
    monkeypatch.delenv("BROWSER_PATH")
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "chromium").symlink_to(fake)
    assert chromium_path() == str(tmp_path / "chromium")


# --- last, so the child started by the first PNG test has had time to finish -----------------


@needs_browser
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_crashed_browser_is_replaced_and_all_is_gone_after_exit(fresh_interpreter):
    out, err = fresh_interpreter.communicate(timeout=120)
    assert fresh_interpreter.returncode == 0, err[-3000:]
    info = json.loads(out.strip().splitlines()[-1])
    first, second = info["first"], info["second"]
    assert first["size"] == second["size"] == [321, 123]
    assert second["pid"] != first["pid"]  # a new browser after the crash
    assert len(first["tree"]) > 2  # the wrapper, Chromium and its helpers were seen
    # atexit closed the second browser; nothing of either is left, nor their profiles.
    assert wait_until(lambda: not any(alive(p) for p in first["tree"] + second["tree"]))
    assert not Path(first["profile"]).exists() and not Path(second["profile"]).exists()
    assert info["streamlit"] is False  # bnviz.export must stay importable without Streamlit
