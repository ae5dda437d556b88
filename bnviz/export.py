"""Exporting figures: server-side PNG (kaleido + Chromium), tidy CSV, and a ZIP of both.

Kept free of Streamlit so it can be tested and used from scripts; the app only calls these
functions and passes ``modebar_config`` to ``st.plotly_chart``.

PNG rendering needs a Chrome/Chromium binary. Starting one costs a few seconds, so the
whole Python process shares ONE browser, started on first use and closed at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import io
import os
import re
import shutil
import threading
import unicodedata
import zipfile
from collections.abc import Mapping
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go

if TYPE_CHECKING:  # pandas is imported where a CSV is written: ~0.5 s less at app start-up
    import pandas as pd

__all__ = [
    "CHROMIUM_HELP",
    "ExportUnavailable",
    "browser_pid",
    "chromium_path",
    "figure_csv",
    "figure_png",
    "figures_zip",
    "modebar_config",
    "safe_filename",
]

CHROMIUM_HELP = (
    "PNG export needs Chrome or Chromium on the machine running the app. "
    "On Debian/Ubuntu install it with: sudo apt-get install -y chromium "
    "(or set BROWSER_PATH to a Chrome/Chromium binary), then restart the app. "
    "Meanwhile, the camera icon in each chart's toolbar still downloads a PNG from your browser."
)

DEFAULT_WIDTH = 900
DEFAULT_HEIGHT = 500

# Names choreographer (kaleido's browser driver) also searches PATH for; Chromium first
# because that is what this project installs (Debian's package).
_BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Starting Chromium takes a few seconds (more on a busy machine); one that neither starts nor
# fails within this is treated as unavailable rather than blocking a Streamlit thread forever.
_START_TIMEOUT_S = 60.0
# Kaleido's own per-render timeout, and ours for a whole call (which also includes waiting
# for the shared tab while other threads render).
_RENDER_TIMEOUT_S = 30.0
_CALL_TIMEOUT_S = 120.0
# Tabs (renderer processes) in the shared browser: two let one render while the other
# reloads (see _kaleido_class); more would only compete for this machine's two cores.
_TABS = 2


class ExportUnavailable(RuntimeError):
    """No usable browser for PNG export; the message says how to fix it (``CHROMIUM_HELP``)."""


def chromium_path() -> str | None:
    """The browser binary PNG export will use, or None.

    ``BROWSER_PATH`` wins when set, as it does in choreographer; if it points at nothing
    executable we return None instead of silently falling back, so a typo is reported.
    We pass this path to kaleido explicitly, so what we report is what gets launched (and a
    browser downloaded by ``kaleido_get_chrome`` is never preferred behind our back).
    """
    override = os.environ.get("BROWSER_PATH")
    if override:
        return override if os.path.isfile(override) and os.access(override, os.X_OK) else None
    for name in _BROWSER_NAMES:
        if found := shutil.which(name):
            return found
    return None


@functools.cache
def _kaleido_class() -> type:
    """kaleido's ``Kaleido``, changed to hand back each image before reloading its tab.

    After every render kaleido reloads the tab (a fresh page, plotly.js parsed again) and
    only then returns the image: about half of each call. Here the reload runs in the
    background; the tab rejoins kaleido's queue when it is done, so the next render still
    gets a fresh page, and with two tabs back-to-back calls rarely wait for one. This
    overrides a private method of the pinned kaleido 1.5.0: if a later kaleido renames it,
    the override is simply never called and exports are slower, not wrong.
    """
    # Imported on first export: kaleido pulls in choreographer and logistro, which app
    # start-up and the CSV/ZIP paths don't need.
    import kaleido

    class ReloadBehindKaleido(kaleido.Kaleido):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._reloads: set[asyncio.Task] = set()  # also keeps the tasks from being GC'd
            self.broken = False  # a background reload failed: a tab is lost, start anew

        async def _return_kaleido_tab(self, tab: Any) -> None:
            task = asyncio.create_task(super()._return_kaleido_tab(tab))
            self._reloads.add(task)
            task.add_done_callback(self._reload_done)

        def _reload_done(self, task: asyncio.Task) -> None:
            self._reloads.discard(task)
            if not task.cancelled() and task.exception() is not None:
                self.broken = True

        async def close(self) -> None:
            pending = list(self._reloads)
            for task in pending:  # don't leave tasks pending when the loop stops at exit
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await super().close()

    return ReloadBehindKaleido


class _BrowserServer:
    """One kaleido ``Kaleido`` (hence one Chromium) on a private asyncio loop thread.

    Why not ``kaleido.start_sync_server``/``calc_fig_sync``: its ``call_function`` is not
    thread-safe (shared result queue, callers can get each other's image: plotly/Kaleido
    #444), and if the browser fails to start its thread dies while ``is_running()`` stays
    True, so the next call blocks forever. Here every call gets its own future from
    ``run_coroutine_threadsafe`` and start-up errors surface in the caller.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards start/stop, not renders
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._kaleido: Any = None
        self._atexit_registered = False

    def _alive(self) -> bool:
        k = self._kaleido
        return k is not None and k.subprocess.poll() is None and not k.broken

    def pid(self) -> int | None:
        return self._kaleido.subprocess.pid if self._alive() else None

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="bnviz-kaleido", daemon=True
            )
            self._thread.start()
        return self._loop

    def _start_locked(self) -> None:
        from choreographer.errors import BrowserFailedError, ChromeNotFoundError

        path = chromium_path()
        if path is None:
            where = os.environ.get("BROWSER_PATH")
            reason = (
                f"BROWSER_PATH={where!r} is not an executable file."
                if where
                else "No Chrome/Chromium found on PATH."
            )
            raise ExportUnavailable(f"{reason}\n{CHROMIUM_HELP}")

        async def open_browser() -> Any:
            # choreographer already launches with --headless --no-sandbox --disable-gpu
            # (its defaults headless=True, enable_sandbox=False, enable_gpu=False), which is
            # what root in a container needs. mathjax=False: the default pulls MathJax from a
            # CDN on every page load, and the app has no LaTeX and may have no network.
            k = _kaleido_class()(
                n=_TABS, path=path, mathjax=False, timeout=_RENDER_TIMEOUT_S, headless=True,
                enable_sandbox=False, enable_gpu=False,
            )
            try:
                await k.open()
            except BaseException:
                with contextlib.suppress(Exception):  # keep the start-up error, not this one
                    await k.close()
                raise
            return k

        future = asyncio.run_coroutine_threadsafe(open_browser(), self._ensure_loop())
        try:
            self._kaleido = future.result(timeout=_START_TIMEOUT_S)
        except (ChromeNotFoundError, BrowserFailedError, OSError, TimeoutError) as exc:
            future.cancel()
            raise ExportUnavailable(
                f"The browser at {path} failed to start ({type(exc).__name__}).\n{CHROMIUM_HELP}"
            ) from exc
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def kaleido(self) -> tuple[Any, asyncio.AbstractEventLoop]:
        """The running Kaleido, started (or restarted after a crash) if needed."""
        with self._lock:
            if not self._alive():
                if self._kaleido is not None:  # the browser died: drop it and start anew
                    self._stop_locked()
                self._start_locked()
            assert self._loop is not None
            return self._kaleido, self._loop

    def discard(self, k: Any) -> None:
        """Forget ``k`` after it failed as a browser, so the next call starts a fresh one.

        Only if it is still the current one: when several threads see the same crash, the
        first restarts the browser and the others must not close the new one.
        """
        with self._lock:
            if self._kaleido is k:
                self._stop_locked()

    def _stop_locked(self) -> None:
        k, self._kaleido = self._kaleido, None
        if k is not None and self._loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(k.close(), self._loop).result(timeout=15)
            except Exception:  # noqa: BLE001 - best effort: a dead browser may not close cleanly
                pass

    def stop(self) -> None:
        """Close the browser and the loop thread; safe to call twice (atexit + tests)."""
        with self._lock:
            self._stop_locked()
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                if self._thread is not None:
                    self._thread.join(timeout=5)
                self._loop = self._thread = None


_server = _BrowserServer()


def browser_pid() -> int | None:
    """PID of the shared browser process kaleido launched (None if not running).

    On Unix this is choreographer's small wrapper process that owns Chromium; it stays the
    same for the life of the browser, which is how tests check that calls reuse it.
    """
    return _server.pid()


def _browser_gone_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning the browser went away mid-call (choreographer's are imported lazily).

    A cancelled future is one of them: when Chromium dies, choreographer's watchdog closes
    the Kaleido, which cancels the renders in flight.
    """
    from choreographer.errors import BrowserClosedError, BrowserFailedError, ChannelClosedError

    return (BrowserClosedError, BrowserFailedError, ChannelClosedError, CancelledError)


def _layout_size(fig: go.Figure, width: int | None, height: int | None) -> tuple[int, int]:
    """Explicit size, else the figure's own layout size, else 900x500 (not kaleido's 700x500)."""
    return (
        int(width or fig.layout.width or DEFAULT_WIDTH),
        int(height or fig.layout.height or DEFAULT_HEIGHT),
    )


def figure_png(
    fig: go.Figure, *, width: int | None = None, height: int | None = None, scale: float = 2
) -> bytes:
    """Render ``fig`` to PNG bytes with the shared headless browser.

    Safe to call from many threads: renders queue for the browser's tabs inside kaleido, so
    concurrent callers simply wait their turn. The image is ``width*scale x height*scale``
    pixels. If the browser died since the last call it is restarted once; raises
    ``ExportUnavailable`` when no browser is found or it fails to start.
    """
    w, h = _layout_size(fig, width, height)
    opts = {"format": "png", "width": w, "height": h, "scale": scale}
    # Serialize in the caller's thread: the loop thread never touches the caller's object.
    spec = fig.to_dict()
    for attempt in (1, 2):
        k, loop = _server.kaleido()
        future = asyncio.run_coroutine_threadsafe(k.calc_fig(spec, opts=opts), loop)
        try:
            return future.result(timeout=_CALL_TIMEOUT_S)
        except _browser_gone_errors() as exc:
            # The browser died under us (crash, OOM kill, killed by hand): a long-running
            # app should recover, so start a new one and try once more.
            _server.discard(k)
            if attempt == 2:
                raise ExportUnavailable(
                    f"The browser stopped while rendering ({type(exc).__name__}).\n"
                    f"{CHROMIUM_HELP}"
                ) from exc
        except BaseException:
            future.cancel()
            raise
    raise AssertionError("unreachable")


def modebar_config(filename: str, scale: float = 2) -> dict[str, Any]:
    """Plotly ``config`` for ``st.plotly_chart``: the camera icon saves a named, sharp PNG."""
    return {
        "toImageButtonOptions": {
            "format": "png",
            "filename": safe_filename(filename),
            "scale": scale,
        },
        "displaylogo": False,
    }


def safe_filename(title: str) -> str:
    """A file name stem from a title: lowercase ASCII letters, digits and dashes, <= 80 chars.

    Accents are folded (``é`` -> ``e``) rather than dropped, other symbols become dashes;
    never empty, so callers can always append an extension.
    """
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    return stem[:80].rstrip("-") or "figure"


# Trace types that plotly.js draws at implicit positions (x0 + i*dx) when x (or y) is missing.
_IMPLICIT_POSITION_TYPES = {"scatter", "scattergl", "bar", "waterfall", "funnel"}


def _prop(trace: Any, key: str) -> Any:
    """A trace property, or None when unset or when this trace type has no such property."""
    return trace[key] if key in trace else None


def _column(trace: Any, key: str) -> np.ndarray | None:
    value = _prop(trace, key)
    return None if value is None else np.asarray(value)


def _implicit(trace: Any, axis: str, n: int) -> np.ndarray:
    """The positions plotly.js uses when an axis array is missing: x0 + i*dx (0 and 1 by default)."""
    start, step = _prop(trace, f"{axis}0"), _prop(trace, f"d{axis}")
    return (0 if start is None else start) + (1 if step is None else step) * np.arange(n)


def _trace_frame(trace: Any, name: str) -> pd.DataFrame:
    """One trace as rows of (x, y[, z]).

    A 2-D ``z`` (heatmap, contour) becomes long format, one row per cell, with x/y the
    column/row coordinates. Otherwise the arrays are taken as they are: a histogram's raw
    samples, not plotly.js's bins, since the bins are computed in the browser.
    """
    import pandas as pd

    x, y, z = (_column(trace, key) for key in ("x", "y", "z"))
    if z is not None and z.ndim == 2:
        rows, cols = z.shape
        xs = x if x is not None and len(x) == cols else _implicit(trace, "x", cols)
        ys = y if y is not None and len(y) == rows else _implicit(trace, "y", rows)
        return pd.DataFrame(
            {"x": np.tile(xs, rows), "y": np.repeat(ys, cols), "z": z.reshape(-1)}
        ).assign(trace=name)

    if trace.type in _IMPLICIT_POSITION_TYPES:
        if x is None and y is not None:
            x = _implicit(trace, "x", len(y))
        elif y is None and x is not None:
            y = _implicit(trace, "y", len(x))
    # Series (not arrays) so unequal lengths pad with NaN instead of raising.
    columns = {k: pd.Series(v) for k, v in (("x", x), ("y", y), ("z", z)) if v is not None}
    frame = pd.DataFrame(columns) if columns else pd.DataFrame({"x": [], "y": []})
    return frame.assign(trace=name)


def _unique(names: list[str], fmt: str) -> list[str]:
    """Disambiguate repeated names with ``fmt`` (e.g. ``"{}-{}"``: a, a -> a, a-2)."""
    used: set[str] = set()
    out = []
    for name in names:
        candidate, k = name, 1
        while candidate in used:
            k += 1
            candidate = fmt.format(name, k)
        used.add(candidate)
        out.append(candidate)
    return out


def figure_csv(fig: go.Figure) -> str:
    """Every trace's data as one tidy CSV: ``trace,x,y`` plus ``z`` when any trace has one.

    Traces are named by their legend name (``trace <i>`` if unnamed; repeats get `` (2)``)
    so the CSV can be split back per trace; rows keep the trace order.
    """
    import pandas as pd

    names = _unique([t.name or f"trace {i}" for i, t in enumerate(fig.data)], "{} ({})")
    frames = [_trace_frame(t, n) for t, n in zip(fig.data, names)]
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    order = ["trace", "x", "y"] + (["z"] if "z" in data.columns else [])
    return data.reindex(columns=order).to_csv(index=False)


def figures_zip(figures: Mapping[str, go.Figure], *, png: bool = True) -> bytes:
    """A ZIP with ``<name>.png`` and ``<name>.csv`` per figure, plus a README.txt.

    If the browser is unavailable the ZIP still holds every CSV, and README.txt says why the
    PNGs are missing and how to get them (``CHROMIUM_HELP``), so a download never just fails.
    """
    stems = _unique([safe_filename(name) for name in figures], "{}-{}")
    png_note: str | None = None if png else "PNG images were not requested; only CSVs are included."
    lines = ["bnviz figure export", "", "Files:"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for (name, fig), stem in zip(figures.items(), stems):
            files = [f"{stem}.csv"]
            archive.writestr(files[0], figure_csv(fig))
            if png_note is None:
                try:
                    # PNGs are already compressed; deflating them again only costs time.
                    archive.writestr(f"{stem}.png", figure_png(fig), zipfile.ZIP_STORED)
                    files.insert(0, f"{stem}.png")
                except ExportUnavailable as exc:  # don't retry the browser for every figure
                    png_note = f"PNG images are missing: {exc}"
            lines.append(f"- {name}: {', '.join(files)}")
        lines += ["", "CSV columns: trace, x, y (and z for heatmaps, one row per cell)."]
        if png_note is not None:
            lines += ["", png_note]
        archive.writestr("README.txt", "\n".join(lines) + "\n")
    return buffer.getvalue()
