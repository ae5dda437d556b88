"""Exporting figures: server-side PNG, SVG and PDF (kaleido + Chromium), tidy CSV, a ZIP of
them, and the "presentation" restyling of a figure for a projector.

Kept free of Streamlit so it can be tested and used from scripts; the app only calls these
functions and passes ``modebar_config`` to ``st.plotly_chart``.

Rendering needs a Chrome/Chromium binary. Starting one costs a few seconds, so the whole
Python process shares ONE browser, started on first use (never at import or page load) and
closed at exit; images asked for together are rendered in one batch on its tabs.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import functools
import html
import io
import os
import re
import shutil
import sys
import threading
import unicodedata
import zipfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import plotly.graph_objects as go

if TYPE_CHECKING:  # pandas is imported where a CSV is written: ~0.5 s less at app start-up
    import pandas as pd

__all__ = [
    "CHROMIUM_HELP",
    "IMAGE_FORMATS",
    "MIME_TYPES",
    "ExportUnavailable",
    "browser_pid",
    "chromium_path",
    "figure_csv",
    "figure_image",
    "figure_images",
    "figure_png",
    "figures_zip",
    "modebar_config",
    "pandas_settled",
    "presentation",
    "safe_filename",
    "settle_pandas",
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


IMAGE_FORMATS = ("png", "svg", "pdf")
MIME_TYPES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf",
              "gif": "image/gif", "mp4": "video/mp4", "zip": "application/zip", "csv": "text/csv"}


def _image_opts(fig: go.Figure, fmt: str, width: int | None, height: int | None, scale: float) -> dict[str, Any]:
    """kaleido's options for one image. SVG and PDF are vector images: ``scale`` only multiplies
    their nominal size, so they are always made at scale 1 (a PDF page of ``width x height`` px)."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; one of {', '.join(IMAGE_FORMATS)}")
    w, h = _layout_size(fig, width, height)
    return {"format": fmt, "width": w, "height": h, "scale": scale if fmt == "png" else 1}


def figure_images(
    requests: Sequence[tuple[go.Figure, str]], *, width: int | None = None, height: int | None = None,
    scale: float = 2,
) -> list[bytes]:
    """Render several ``(figure, format)`` pairs (format: png, svg or pdf) in one call to the
    shared browser; the images in the order asked.

    One call rather than one per image: the renders are queued together, so the browser's tabs
    work on them side by side (as kaleido's ``write_fig_from_object`` does with a batch of
    figures, but returning the bytes instead of writing files), and the caller waits once. Same
    guarantees as :func:`figure_png`: safe from many threads, one restart of a browser that
    died, ``ExportUnavailable`` when there is none.
    """
    # Serialize in the caller's thread: the loop thread never touches the caller's objects.
    jobs = []
    for fig, fmt in requests:
        spec, opts = fig.to_dict(), _image_opts(fig, fmt, width, height, scale)
        # Lines of text broken to fit the image's width; the image grows by the lines added
        # (an explicit height stays as asked: the plot gives up the room).
        grown = fit_text(spec, opts["width"], opts["height"])
        if height is None:
            opts["height"] += grown
        jobs.append((spec, opts))
    if not jobs:
        return []
    for attempt in (1, 2):
        k, loop = _server.kaleido()

        async def render_all(k: Any = k) -> list[bytes]:
            return list(await asyncio.gather(*(k.calc_fig(spec, opts=opts) for spec, opts in jobs)))

        future = asyncio.run_coroutine_threadsafe(render_all(), loop)
        try:
            return future.result(timeout=_CALL_TIMEOUT_S * max(1, len(jobs) // _TABS))
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


def figure_image(
    fig: go.Figure, fmt: str = "png", *, width: int | None = None, height: int | None = None, scale: float = 2
) -> bytes:
    """One image of ``fig`` as PNG, SVG or PDF bytes (see :func:`figure_images`)."""
    return figure_images([(fig, fmt)], width=width, height=height, scale=scale)[0]


def figure_png(
    fig: go.Figure, *, width: int | None = None, height: int | None = None, scale: float = 2
) -> bytes:
    """Render ``fig`` to PNG bytes with the shared headless browser.

    Safe to call from many threads: renders queue for the browser's tabs inside kaleido, so
    concurrent callers simply wait their turn. The image is ``width*scale x height*scale``
    pixels. If the browser died since the last call it is restarted once; raises
    ``ExportUnavailable`` when no browser is found or it fails to start.
    """
    return figure_image(fig, "png", width=width, height=height, scale=scale)


# Presentation: sizes a projector needs. Plotly.js's defaults for what a figure leaves unset
# (the house template sets none of them), so that unset sizes grow as much as set ones.
PRESENTATION_SCALE = 1.6
_DEFAULT_FONT_SIZE = 12     # layout.font.size; titles, ticks, legends and axis titles inherit it
_DEFAULT_LINE_WIDTH = 2     # scatter line.width
_DEFAULT_MARKER_SIZE = 6    # scatter marker.size
_DEFAULT_AXIS_WIDTH = 1     # an axis' linewidth, gridwidth and tickwidth
_DEFAULT_MARGIN = {"l": 80, "r": 80, "t": 100, "b": 80}   # layout.margin
_DEFAULT_HEIGHT = 450                                     # layout.height
_TITLE_PAD, _TITLE_LINE = 10, 22   # px at font size 12: above the title, and per line of it (1.4x the font)
_LINE_TRACES = {"scatter", "scattergl", "scatterpolar", "scatterternary"}


def _scaled(value: Any, scale: float) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value * scale
    if isinstance(value, (list, tuple)):  # per-point sizes
        return [_scaled(v, scale) for v in value]
    return value


def _scale_sizes(node: Any, scale: float) -> None:
    """Multiply, in place, every size set anywhere in a figure's dict: ``size`` of any font
    (``font``, ``tickfont``, ``insidetextfont``, ...) and ``width`` of any ``line``."""
    if isinstance(node, list):
        for item in node:
            _scale_sizes(item, scale)
    elif isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict) and (key.endswith("font") or key == "line"):
                field = "size" if key.endswith("font") else "width"
                if field in value:
                    value[field] = _scaled(value[field], scale)
            _scale_sizes(value, scale)


# Plotly.js never breaks a line of text: a title longer than its figure is wide ran off the
# image (a 118-character one did at 900 px; in Presentation, at 1.6 times the size, most long
# ones did) and subplot titles ran into each other. fit_text breaks them where a space is, by
# the width each character has in Arial / Helvetica (the metric every sans-serif font of a
# Chromium without plotly's "Open Sans" falls back to here), a little more to be safe.
_EM_WIDTHS = dict(zip(
    " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
    (278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, *(556,) * 10, 278, 278,
     584, 584, 584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
     667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500,
     556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722,
     500, 500, 500, 334, 260, 334, 584)))      # Helvetica's advance widths, in thousandths of an em
_OTHER_EM = 0.6     # a character outside that table (Greek, arrows): about a capital's
_SAFETY = 1.02      # Chromium's Arial (Liberation Sans here) has these widths; a little to spare
_SMALL_EM = 0.7     # <sub> and <sup> text, relative to its line's font
_LINE_EM = 1.3      # height of a line of a text of several lines, in ems of its font
_TEXT_PAD = 16      # px kept free between a text and the edge or neighbour that bounds it
_TAG = re.compile(r"<(/?)([a-zA-Z]+)[^>]*>")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def text_width(text: str, size: float) -> float:
    """An estimate of the width in px of one line of plotly text at font ``size``: tags and
    entities allowed, ``<sub>`` / ``<sup>`` text smaller, combining accents (x&#770;) of no width."""
    width, small, at = 0.0, 0, 0
    for match in [*_TAG.finditer(text), None]:
        piece = html.unescape(text[at:match.start() if match else len(text)])
        ems = sum(0.0 if unicodedata.combining(c) else _EM_WIDTHS[c] / 1000 if c in _EM_WIDTHS else _OTHER_EM
                  for c in piece)
        width += ems * (_SMALL_EM if small else 1.0)
        if match:
            if match.group(2).lower() in ("sub", "sup"):
                small = max(0, small + (-1 if match.group(1) else 1))
            at = match.end()
    return size * _SAFETY * width


def wrap_text_line(line: str, room: float, size: float) -> list[str]:
    """One line of plotly text (tags such as ``<sub>`` and ``<b>`` allowed) at font ``size``,
    broken at spaces into lines of at most ``room`` px (:func:`text_width`); a word longer than
    that stays whole. A tag open where the line breaks is closed before the break and opened
    again after it."""
    lines: list[str] = []
    current: list[str] = []
    opened: list[tuple[str, str]] = []         # (name, the opening tag as written)
    reopen = ""
    for word in line.split(" "):
        if current and text_width(" ".join(current + [word]), size) > room:
            lines.append(" ".join(current) + "".join(f"</{name}>" for name, _ in reversed(opened)))
            reopen = "".join(tag for _, tag in opened)
            current = []
        current.append(reopen + word if not current else word)
        reopen = ""
        for match in _TAG.finditer(word):
            closing, name = match.group(1), match.group(2).lower()
            if name == "br":
                continue
            if not closing:
                opened.append((name, match.group(0)))
            elif opened and opened[-1][0] == name:
                opened.pop()
    lines.append(" ".join(current))
    return lines


def _wrap_text(text: str, size: float, room: float) -> tuple[str, int]:
    """``text`` at font ``size`` broken to fit ``room`` pixels, and the lines it gained."""
    out: list[str] = []
    for line in _BREAK.split(text):
        out.extend(wrap_text_line(line, room, size) if text_width(line, size) > room else [line])
    return "<br>".join(out), len(out) - _lines(text)


def _lines(text: str) -> int:
    return 1 + len(_BREAK.findall(text))


def _pin_title(title: dict[str, Any], size: float, pad: float) -> None:
    """Put the title's first line ``pad`` px under the top of the figure, the others under it.
    Plotly.js lowers the first line of a one-line title by its cap height (0.7 em) under its
    anchor, but not that of a title of several lines: pinned there, a title of several lines had
    the top of its first line cut off by the top of the image (measured in Chromium: the box of a
    20 px title starts 6 px under a 10 px pad with one line, 8 px above the figure with two or more)."""
    shift = 0.7 * size if _lines(str(title.get("text") or "")) > 1 else 0.0
    title.update(yref="container", y=1, yanchor="top", pad={**(title.get("pad") or {}), "t": pad + shift})


def _legend_height(spec: dict[str, Any], width: float, font: float) -> float:
    """An estimate of the height of the figure's legend: rows of its entries, as plotly.js lays
    out a horizontal legend across the figure, or one row an entry."""
    layout = spec.get("layout") or {}
    legend = layout.get("legend") or {}
    size = (legend.get("font") or {}).get("size") or font
    names = list(dict.fromkeys(str(t.get("name")) for t in spec.get("data") or []
                               if t.get("showlegend", True) is not False and t.get("name")))
    if not names or layout.get("showlegend") is False:
        return 0.0
    rows = len(names)
    if legend.get("orientation") == "h":
        rows, used = 1, 0.0
        for name in names:
            entry = 40 + text_width(name, size)    # symbol, gap, text
            if used and used + entry > width - 2 * _TEXT_PAD:
                rows, used = rows + 1, 0.0
            used += entry
    return rows * size * _LINE_EM + 2 * _TITLE_PAD


def fit_text(spec: dict[str, Any], width: float, height: float | None = None) -> int:
    """Break, in place, the title and the subplot titles (annotations above the plot, as
    ``make_subplots`` writes them) of the figure ``spec`` (a figure's dict), ``width`` pixels
    wide, into lines that fit it. When lines were added, the top margin grows to hold the
    title, a legend above the plot and the subplot titles one under the other, and the figure
    grows by as much (its plot keeps its size). Returns the pixels added to the height
    (``height``: the figure's, if its layout has none). The app's figures are drawn as wide as
    the page, which is not known here; images are not, and Presentation fits DEFAULT_WIDTH."""
    layout = spec["layout"]
    font = (layout.get("font") or {}).get("size") or _DEFAULT_FONT_SIZE
    margin = {**_DEFAULT_MARGIN, **(layout.get("margin") or {})}
    title = layout.get("title") or {}
    title_px = 0.0
    title_size = (title.get("font") or {}).get("size") or round(font * 1.4)
    if title.get("text"):
        x = title.get("x", 0.5) if title.get("xref", "container") == "container" else 0.5
        room = width * (1 - x if x < 1 / 3 else x if x > 2 / 3 else 2 * min(x, 1 - x)) - _TEXT_PAD
        text, added = _wrap_text(str(title["text"]), title_size, room)
        title["text"] = text
        title_px = added * title_size * _LINE_EM
    plot_width = width - margin["l"] - margin["r"]
    notes = [note for note in layout.get("annotations") or []
             if not note.get("showarrow", True) and note.get("xref") == "paper" and note.get("text")]
    added_above = notes_px = 0.0   # subplot titles above the plot: lines added, and the tallest
    sizes = [(note.get("font") or {}).get("size") or font for note in notes]
    halves = [max(text_width(line, size) for line in _BREAK.split(str(note["text"]))) / 2
              for note, size in zip(notes, sizes)]
    for i, note in enumerate(notes):
        # Centred on its x, a note may reach the figure's edge, and towards each nearest neighbour
        # on its row (subplot titles of one row share y) as far as the neighbour leaves free: the
        # neighbour keeps its own half width, or half of the space between them if it wants more.
        x, y = note.get("x", 0.5), note.get("y", 0.5)
        half = min(x * plot_width + margin["l"], (1 - x) * plot_width + margin["r"]) - _TEXT_PAD / 2
        row = [(abs(other.get("x", 0.5) - x) * plot_width, j) for j, other in enumerate(notes)
               if j != i and abs(other.get("y", 0.5) - y) < 0.02]
        for side in (1, -1):
            near = [(d, j) for d, j in row if (notes[j].get("x", 0.5) - x) * side > 0]
            if near:
                d, j = min(near)
                half = min(half, d - _TEXT_PAD - min(halves[j], (d - _TEXT_PAD) / 2))
        size = sizes[i]
        text, added = _wrap_text(str(note["text"]), size, 2 * half)
        note["text"] = text
        if note.get("yref") == "paper" and note.get("y", 0) >= 1 and note.get("yanchor") == "bottom":
            added_above = max(added_above, added * size * _LINE_EM)
            notes_px = max(notes_px, _lines(text) * size * _LINE_EM)
    if not (title_px or added_above):
        return 0
    # Lines were added: the title goes to the top of the figure, lines flowing down (plotly.js
    # centres one it places itself in the top margin, which grows: into the subplot titles).
    title_bottom = 0.0
    if title.get("text") and ("y" not in title or (title.get("yanchor") == "top" and title.get("yref") == "container")):
        _pin_title(title, title_size, _TITLE_PAD * font / _DEFAULT_FONT_SIZE)
        title_bottom = _TITLE_PAD * font / _DEFAULT_FONT_SIZE + _lines(str(title["text"])) * title_size * _LINE_EM
    old_height = layout.get("height") or height or DEFAULT_HEIGHT
    plot_height = old_height - margin["t"] - margin["b"]
    legend = layout.get("legend") or {}
    legend_px = _legend_height(spec, width, font)
    placed = isinstance(legend.get("y"), (int, float))
    above_plot = placed and legend["y"] > 1 and legend.get("yref", "paper") == "paper"
    under_title = placed and legend.get("yref") == "container"
    top = margin["t"] + added_above
    if above_plot:
        # In plot heights above the plot: up by the subplot titles' added lines, under the title.
        legend["y"] += added_above / max(plot_height, 1)
        top = max(top, title_bottom + _TEXT_PAD + (legend["y"] - 1) * plot_height + legend_px)
    elif under_title:
        # Under the title (Presentation): down by the title's added lines, above the subplot titles.
        legend_top = (1 - legend["y"]) * old_height + title_px
        top = max(top, legend_top + legend_px + _TEXT_PAD / 2 + notes_px)
    else:
        top = max(top, title_bottom + _TEXT_PAD / 2 + notes_px)
    grown = round(max(top - margin["t"], 0.0))
    new_height = old_height + grown
    if under_title:
        legend["y"] = 1 - legend_top / new_height
    layout["margin"] = {**layout.get("margin", {}), "t": margin["t"] + grown}
    layout["height"] = new_height
    return grown


def _make_room(layout: dict[str, Any], scale: float) -> None:
    """Margins ``scale`` times wider for the larger labels, and a figure taller by half as much so
    its plot area does not shrink to nothing. A legend above the plot moves under the title."""
    margin = {**_DEFAULT_MARGIN, **layout.get("margin", {})}
    height = layout.get("height") or _DEFAULT_HEIGHT
    margin = {k: v * scale if k in "lrtb" else v for k, v in margin.items()}
    height = round(height * (1 + (scale - 1) / 2))
    layout["margin"], layout["height"] = margin, height
    legend = layout.get("legend", {})
    if isinstance(legend.get("y"), (int, float)) and legend["y"] > 1 and legend.get("yref", "paper") == "paper":
        # A legend above the plot shares the top margin with the title; at these sizes the two no
        # longer fit side by side. Title on the first line(s), the legend under it, from the left.
        title = layout.setdefault("title", {})
        lines = _lines(str(title.get("text") or "")) + bool(title.get("subtitle", {}).get("text"))
        px = layout["font"]["size"] / _DEFAULT_FONT_SIZE   # pixels per pixel at font size 12
        _pin_title(title, (title.get("font") or {}).get("size") or round(layout["font"]["size"] * 1.4),
                   _TITLE_PAD * px)
        below_title = (2 * _TITLE_PAD + lines * _TITLE_LINE) * px
        legend.update(yref="container", yanchor="top", y=1 - below_title / height, xanchor="left", x=0)


def presentation(fig: go.Figure, scale: float = PRESENTATION_SCALE) -> go.Figure:
    """A copy of ``fig`` for a projector: every text ``scale`` times larger, every line and
    marker ``scale`` times thicker, and margins that leave room for the larger labels.

    One function for every figure (the app's "presentation" setting, its exports and
    ``bnviz export --presentation``), so no figure builder knows about it. Sizes a figure sets are
    multiplied; sizes it leaves to plotly.js are set to ``scale`` times plotly.js's default. Text
    that inherits the base font (titles at 1.4x it, ticks, legends, axis titles) follows
    ``layout.font.size``. The data, and so the CSV export, are unchanged.
    """
    # What fig.to_dict() copies, before it turns numpy arrays into base64 text for the browser: the
    # copy keeps arrays as arrays, so figure_csv and anything else reading its data see the same.
    spec = {"data": copy.deepcopy(fig._data), "layout": copy.deepcopy(fig._layout)}
    layout = spec["layout"]
    template = layout.pop("template", None)  # kept aside: its sizes are defaults, set scaled below
    _scale_sizes(spec, scale)
    template_font = (template or {}).get("layout", {}).get("font", {})
    font = layout.setdefault("font", {})
    font.setdefault("size", template_font.get("size", _DEFAULT_FONT_SIZE) * scale)
    for trace in spec.get("data", []):
        if trace.get("type", "scatter") in _LINE_TRACES:
            mode = trace.get("mode", "lines+markers")
            if "lines" in mode:
                trace.setdefault("line", {}).setdefault("width", _DEFAULT_LINE_WIDTH * scale)
            if "markers" in mode:
                marker = trace.setdefault("marker", {})
                marker["size"] = _scaled(marker.get("size", _DEFAULT_MARKER_SIZE), scale)
    for name, axis in layout.items():
        if isinstance(axis, dict) and name.startswith(("xaxis", "yaxis")):
            for key in ("linewidth", "gridwidth", "tickwidth"):
                axis[key] = axis.get(key, _DEFAULT_AXIS_WIDTH) * scale
    _make_room(layout, scale)
    # At these sizes a title of some 60 characters no longer fits the narrowest place a figure
    # is shown (an image of DEFAULT_WIDTH px): broken into lines where it is made, so the page shows them too.
    fit_text(spec, layout.get("width") or DEFAULT_WIDTH)
    if template is not None:
        layout["template"] = template
    # Not validated again: every value came from a validated figure, and only numbers and layout
    # keys plotly.js documents were changed (the tests render the result). Validating would take
    # 20-140 ms a figure (the template above all), on every page run with Presentation on.
    return go.Figure(spec, _validate=False)


def settle_pandas() -> None:
    """Wait for an import of pandas that another thread has begun (see the import in bnviz.ui).
    ``import`` waits on the module's lock until it is done."""
    if "pandas" in sys.modules:
        import pandas  # noqa: F401


_T = TypeVar("_T")


def pandas_settled(make: Callable[[], _T]) -> _T:
    """``make()`` (plotly work), done again once pandas is imported if another thread began
    importing pandas while it ran.

    For the home page, which draws its first chart before it imports bnviz.ui (pandas, ~0.3 s):
    a run of another page can begin importing pandas at any moment, and plotly, which only looks
    pandas up in sys.modules, then meets a half-imported module ("partially initialized module
    'pandas' has no attribute 'Series'": the page showed that traceback to one of 8 sessions
    started at once). Waiting first (:func:`settle_pandas`) leaves a window; this closes it."""
    settle_pandas()
    try:
        return make()
    except AttributeError as exc:
        if "pandas" not in str(exc):
            raise
        import pandas  # noqa: F401 - waits for the other thread's import to finish
        return make()


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


def figures_zip(figures: Mapping[str, go.Figure], *, images: Sequence[str] = IMAGE_FORMATS,
                extra: Mapping[str, bytes] | None = None) -> bytes:
    """A ZIP with ``<name>.csv`` and ``<name>.<format>`` per figure and image format (PNG, SVG
    and PDF by default; ``images=()`` for the CSVs only), ``extra`` files as they are (e.g. an
    animation), and a README.txt.

    Every image is rendered in one batch (:func:`figure_images`). If the browser is unavailable
    the ZIP still holds every CSV, and README.txt says why the images are missing and how to get
    them (``CHROMIUM_HELP``), so a download never just fails.
    """
    stems = _unique([safe_filename(name) for name in figures], "{}-{}")
    image_note: str | None = None if images else "Images were not requested; only CSVs are included."
    rendered: dict[tuple[str, str], bytes] = {}
    if images:
        jobs = [(stem, fmt, fig) for (name, fig), stem in zip(figures.items(), stems) for fmt in images]
        try:
            data = figure_images([(fig, fmt) for _, fmt, fig in jobs], width=DEFAULT_WIDTH)
            rendered = {(stem, fmt): blob for (stem, fmt, _), blob in zip(jobs, data)}
        except ExportUnavailable as exc:
            image_note = f"{'/'.join(f.upper() for f in images)} images are missing: {exc}"
    lines = ["bnviz figure export", "", "Files:"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for (name, fig), stem in zip(figures.items(), stems):
            files = []
            for fmt in images:
                if (stem, fmt) in rendered:
                    # PNGs are already compressed; deflating them again only costs time.
                    archive.writestr(f"{stem}.{fmt}", rendered[stem, fmt],
                                     zipfile.ZIP_STORED if fmt == "png" else zipfile.ZIP_DEFLATED)
                    files.append(f"{stem}.{fmt}")
            archive.writestr(f"{stem}.csv", figure_csv(fig))
            files.append(f"{stem}.csv")
            lines.append(f"- {name}: {', '.join(files)}")
        for filename, blob in (extra or {}).items():
            archive.writestr(filename, blob, zipfile.ZIP_STORED)
            lines.append(f"- {filename}")
        lines += ["", "PNG: 2x pixels for sharp slides; SVG and PDF: vector images at the same size.",
                  "CSV columns: trace, x, y (and z for heatmaps, one row per cell)."]
        if image_note is not None:
            lines += ["", image_note]
        archive.writestr("README.txt", "\n".join(lines) + "\n")
    return buffer.getvalue()
