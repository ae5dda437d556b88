"""The Streamlit pieces every page shares; with ``ui_first_paint`` (the home page's wait for its
first chart, which must not import torch) the only modules of bnviz that import streamlit.

A page is a script that reads top to bottom:

    page = ui.Page("histograms", "Activation histograms", "what to look for ...")
    config = page.config(Config(...), main=("activation", "depth", ...))   # sidebar + URL
    runs = page.train({"with BN": config, "without BN": config.without_norm()})
    if runs: page.chart(figures.layer_histograms(...), "layer histograms")
    page.download_all()

What lives here and why:
- controls: one spec per Config field (widget, range, help text), so every page offers the same
  control for the same setting, and the URL query string can carry and validate any of them;
- URL state: read once when a page opens (clamped by :func:`bnviz.config.from_query`, with a
  visible note), written back on every run, so the address bar is always a shareable link;
- training: cached by the full Config in a bounded, process-wide store (sessions share results
  of identical configs and nothing else), with live progress, live charts and a Stop button;
- parts: a display-only control reruns only the parts of the page drawn with its value (Streamlit
  fragments, :meth:`Page.part`), not the page script: no rebuilding of the other figures, and only
  the changed ones are sent to the browser;
- charts: the modebar camera names its PNG after the chart, a server-rendered "Download PNG",
  and one "Download all (ZIP)" per page;
- errors: nothing the user does shows a traceback; the explanation says what to change.
"""
from __future__ import annotations

import functools
import gc
import inspect
import json
import logging
import math
import threading
import time
import traceback
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Hashable, Iterator, Mapping, Sequence

# pandas first, and here, not where a page first needs it (Inside BN, a table, a CSV): plotly looks
# pandas up in sys.modules without importing it (is this a Series?), and with fast reruns a page
# switch starts the new run while the old one is still in `import pandas`. The new run's figures
# then met a half-imported module: "Something went wrong (AttributeError: partially initialized
# module 'pandas' has no attribute 'Series')" on every chart. A page imports this module before it
# draws anything, and an import another thread has begun is waited for; ~0.4 s once per server.
import pandas  # noqa: F401
import plotly.graph_objects as go
import streamlit as st
import torch
from streamlit.errors import StreamlitAPIException
from streamlit.runtime.scriptrunner import get_script_run_ctx

from . import executor, export, idle_gc, seeds
from .config import (ACTIVATIONS, ARCHS, DATASETS, DROPOUT_POSITIONS, NORMS, OPTIMIZERS, PLACEMENTS, SHIFTS,
                     Config, ConfigError, check, from_query, quoted)
from .data import DataNotFoundError, DataFormatError
from .record import History
from .seeds import MAX_SEEDS
from .train import Run, momentum_free, with_momentum

log = logging.getLogger("bnviz")

# Sessions train in threads of one server process; one intra-op thread each keeps a session from
# taking both cores from the others (and small networks gain nothing from more threads).
torch.set_num_threads(1)
# Streamlit runs gc.collect(2) after every script run, fragment reruns included (its hidden option
# runner.postScriptGC): with torch, plotly and streamlit loaded that walks some 220,000 objects,
# ~130 ms of CPU each time. What exists now (modules, their classes and functions) lives as long
# as the process: gc.freeze() takes it out of the collector's sight. A full collection still takes
# 12-57 ms once pages have run, and a display change would wait for one (its messages queue behind
# it, and a control several parts depend on waits for the collection of the run it stops): so
# .streamlit/config.toml turns that option off and bnviz.idle_gc collects once the server is idle.
gc.freeze()


def _start_workers() -> None:
    try:
        executor.shared().warm()
    except Exception:  # noqa: BLE001 - the first training reports it on its page
        log.error("could not start the training workers\n%s", traceback.format_exc())


# Training runs in worker processes (bnviz.executor): start them now, in the background, so that
# the first run does not wait for them (their start imports torch again, ~2 s of CPU).
threading.Thread(target=_start_workers, name="bnviz-workers", daemon=True).start()

SHARED = ("dataset", "seed", "steps", "batch_size", "lr", "optimizer")
PARTIALS_KEPT = 8  # partial histories of interrupted runs kept per page and session
MAX_URL_NOTES = 12  # notes about a link's adjusted settings shown at most
LIVE_REDRAW_S = 0.7  # seconds between redraws of a live training chart
PRESENTATION = "presentation"  # session and URL key of the Presentation setting, one for every page
MAX_RUNS = 160  # runs one page trains at most (its networks times its seeds)
RELEASE_GRACE_S = 2.0  # an interrupted page's runs go on this long, for its next run to take them over
_GONE = object()


@dataclass(frozen=True)
class Control:
    """How one Config field is shown: widget kind, label, options or range, and its definition."""

    label: str
    kind: str                                # "select", "stops" (a slider over options), "radio", "slider", "number", "toggle"
    options: Sequence[Any] = ()
    low: float = 0.0
    high: float = 1.0
    step: float = 1.0
    help: str = ""
    fmt: Callable[[Any], str] = str


def _fmt_momentum(m: Any) -> str:
    """A PyTorch momentum with the Keras value that means the same (the weight of the old value)."""
    return "None (cumulative average)" if m is None else f"{m:g} (Keras {1 - m:.4g})"


# Log-spaced stops (1-2-5 per decade) with PyTorch's default 0.1; None, the cumulative average,
# weighs the old statistics more with every step, so it sits below the smallest.
MOMENTUM_STOPS = (None, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


CONTROLS: dict[str, Control] = {
    "dataset": Control("Data set", "select", DATASETS,
                       help="digits: scikit-learn's bundled 8x8 handwritten digits (1797 images). moons, circles, "
                            "spirals, blobs: synthetic 2-D sets. mnist / fashion-mnist: read from local files only."),
    "seed": Control("Seed", "number", low=0, high=9999, step=1,
                    help="Seeds weights, batches and dropout: the same settings and seed give identical results."),
    "steps": Control("Training steps", "select", (100, 200, 300, 500, 1000, 2000, 3000, 5000),
                     help="Number of weight updates (mini-batches)."),
    "batch_size": Control("Batch size", "select", (1, 2, 4, 8, 16, 32, 60, 64, 128, 256),
                          help="Samples per mini-batch; BatchNorm's statistics are computed over this many samples."),
    "lr": Control("Learning rate", "select", (0.0003, 0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.3, 1.0, 3.0, 10.0),
                  help="Step size of the optimizer."),
    "optimizer": Control("Optimizer", "radio", OPTIMIZERS, help="Plain SGD (no momentum) or Adam."),
    "arch": Control("Network", "radio", ARCHS, help="mlp: fully connected; cnn: two 3x3 conv layers (8, 16 channels)."),
    "activation": Control("Activation", "select", ACTIVATIONS),
    "depth": Control("Hidden layers", "slider", low=1, high=6, step=1),
    "width": Control("Units per layer", "select", (8, 16, 32, 64, 100, 128, 256)),
    "norm": Control("Normalization", "select", NORMS,
                    help="batchnorm: torch.nn.BatchNorm; reference: bnviz's BatchNorm from elementary ops; "
                         "layernorm / groupnorm: per-sample normalizations; none."),
    "placement": Control("BN placement", "stops", PLACEMENTS,
                         fmt=lambda p: {"none": "no normalization",
                                        "before": "before activation (Linear-BN-act)",
                                        "after": "after activation (Linear-act-BN)"}[p],
                         help="Where the normalization layer sits in each hidden block; 'no normalization' "
                              "removes it (whatever the Normalization setting)."),
    "momentum": Control("BN momentum", "stops", MOMENTUM_STOPS, fmt=_fmt_momentum,
                        help="PyTorch convention: running = (1 - m) * running + m * batch statistic (default "
                             "0.1). Keras' momentum is the weight of the OLD value: Keras 0.99 is PyTorch 0.01. "
                             "Momentum does not change training at all (in training mode BN normalizes with "
                             "the batch's own statistics), only the running statistics eval mode uses: moving "
                             "it recomputes them from the recorded batch statistics, without training again."),
    "eps": Control("BN eps", "select", (1e-8, 1e-5, 1e-3, 1e-1, 1.0),
                   help="Added to the variance before the square root: x_hat = (x - mean) / sqrt(var + eps)."),
    "affine": Control("Learn gamma and beta (affine)", "toggle",
                      help="affine=True (PyTorch's default): each normalized feature is rescaled and shifted by "
                           "a learned gamma and beta. affine=False: the layer only standardizes (mean 0, "
                           "variance 1); some lecturers recommend it before a ReLU-free layer or a linear "
                           "classifier, whose own weights can do the rescaling."),
    "bias_with_norm": Control("Keep the Linear bias before BN", "toggle",
                              help="A bias right before BN is subtracted again with the batch mean: it has no effect."),
    "dropout": Control("Dropout probability", "slider", low=0.0, high=0.9, step=0.05,
                       help="Probability of zeroing a unit in training (inverted dropout: kept units scaled by 1/(1-p))."),
    "dropout_position": Control("Dropout position", "radio", DROPOUT_POSITIONS,
                                fmt=lambda p: {"after_activation": "after each activation (act-dropout, then next BN)",
                                               "before_norm": "right before each BN (dropout-BN)",
                                               "before_output": "only before the classifier (after all BNs)"}[p]),
    "init_scale": Control("Weight-init scale", "select", (0.1, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0),
                          help="Multiplies PyTorch's default initial weights."),
    "shift": Control("Test-domain shift", "radio", SHIFTS),
    "shift_amount": Control("Shift amount", "slider", low=0.0, high=3.0, step=0.1),
    "n_samples": Control("Samples (synthetic / MNIST)", "select", (200, 500, 1000, 2000, 5000, 10000)),
}


def _nearest(options: Sequence[Any], value: Any) -> Any:
    if value in options:
        return value
    numeric = [o for o in options if isinstance(o, (int, float))]
    # A link can hold anything: a value that is not a number has no nearest option.
    if not isinstance(value, (int, float)) or not numeric:
        return options[0]
    return min(numeric, key=lambda o: abs(o - value))


def _widget(name: str, key: str, where: Any) -> Any:
    c = CONTROLS[name]
    if c.kind == "select":
        return where.selectbox(c.label, c.options, format_func=c.fmt, key=key, help=c.help or None,
                               persist_state="session")
    if c.kind == "stops":
        return where.select_slider(c.label, c.options, format_func=c.fmt, key=key, help=c.help or None,
                                   persist_state="session")
    if c.kind == "radio":
        return where.radio(c.label, c.options, format_func=c.fmt, key=key, help=c.help or None,
                           horizontal=len(c.options) <= 3, persist_state="session")
    if c.kind == "slider":
        return where.slider(c.label, c.low, c.high, step=c.step, key=key, help=c.help or None,
                            persist_state="session")
    if c.kind == "number":
        return where.number_input(c.label, int(c.low), int(c.high), step=int(c.step), key=key,
                                  help=c.help or None, persist_state="session")
    return where.toggle(c.label, key=key, help=c.help or None, persist_state="session")


def _widget_value(name: str, value: Any) -> Any:
    """The value as the field's widget can show it (snapped to its options or range)."""
    c = CONTROLS[name]
    if c.kind in ("select", "stops", "radio"):
        return _nearest(list(c.options), value)
    if c.kind == "slider":
        v = min(max(value, c.low), c.high)
        return int(v) if isinstance(c.low, int) and isinstance(c.step, int) else float(v)
    if c.kind == "number":
        return int(min(max(value, c.low), c.high))
    return bool(value)


def _leave_pages_folder_mode() -> None:
    """Serve every page through app.py's st.navigation, the first run of a new server included.

    Until some run has called st.navigation, Streamlit takes the ``pages/`` folder for its old
    multipage mode: a new server's first visitor who opens a view's address (not ``/``) gets that
    page script run directly, under a sidebar that lists "app" and no sections, and every later
    visitor too until someone opens ``/``. Rerunning sends this run through app.py instead.
    """
    from streamlit.runtime.pages_manager import PagesManager
    if PagesManager.uses_pages_directory and get_script_run_ctx() is not None:
        PagesManager.uses_pages_directory = False
        st.rerun()


class Page:
    """One view: its controls, URL, training, charts and exports."""

    n_seeds = 1                                        # seeds every run is trained at (the Seeds control)
    momentum_control = False                           # the page offers BN momentum: its runs keep a trace

    def __init__(self, slug: str, title: str | None, caption: str | None = None):
        """``title`` None: the page has drawn its own title (the home page does, before torch)."""
        _leave_pages_folder_mode()
        self.slug = slug
        self.figures: dict[str, go.Figure] = {}
        self.animations: dict[str, Callable[[], bytes]] = {}  # file name -> its GIF, made on demand
        self.url_notes: list[str] = []
        self._notes_box: Any = None                    # where the link's notes are shown (see _link_note)
        self._config_for_url: dict[str, str] = {}      # the Config's part of the URL (none without one)
        self.parts: dict[str, tuple[str, ...]] = {}   # fragment key -> the view settings it is drawn with
        self._drawing: str | None = None               # the part being drawn now, if any
        self._live_draws = 0                           # live training charts drawn in this run
        if st.session_state.pop(f"{slug}.__checked", False):  # a page run a check of follow() asked for
            self._put_back_views()
            st.session_state[f"{slug}.__resync"] = True
        if title is not None:
            st.title(title)
        if caption is not None:
            st.caption(caption)

    # ----- controls and URL -------------------------------------------------------------------
    def _key(self, name: str) -> str:
        return name if name in SHARED else f"{self.slug}.{name}"

    def config(self, base: Config, main: Sequence[str] = (), *, sidebar: Sequence[str] = SHARED,
               view: Mapping[str, Any] | None = None, seeds: bool = False) -> Config:
        """Show the sidebar and page controls for ``base`` and return the Config they describe.

        ``main`` fields are shown in an expander on the page; ``sidebar`` ones in the sidebar.
        On the first run of this page in a session the URL query string seeds the controls.
        ``view`` lists display-only parameters the page keeps in the URL ({name: default}).
        ``seeds``: the page compares runs; the sidebar offers the Seeds control (URL key ``seeds``),
        and :meth:`train` trains every run at that many seeds (:attr:`n_seeds`).
        """
        # Every page that offers a setting of its normalization layers offers affine beside it.
        if "affine" not in main and {"norm", "placement", "momentum", "eps"} & set(main):
            main = (*main, "affine")
        names = list(sidebar) + [n for n in main if n not in sidebar]
        # A momentum control is answered from each run's batch trace (bnviz.batch_trace): only
        # such pages have their runs keep one.
        self.momentum_control = "momentum" in names
        view = {**(view or {}), "seeds": 1} if seeds else (view or {})
        self._seed_from_url(base, names, view)
        for name in names:
            key = self._key(name)
            if key not in st.session_state:
                st.session_state[key] = _widget_value(name, getattr(base, name))
        with st.sidebar:
            _presentation_control()
            st.subheader("Training")
            values = {n: _widget(n, self._key(n), st) for n in sidebar}
            if seeds:
                self.n_seeds = self._seeds_control()
        if main:
            with st.expander("Network and normalization settings", expanded=True):
                cols = st.columns(3)
                for i, n in enumerate(n for n in main if n not in sidebar):
                    values[n] = _widget(n, self._key(n), cols[i % 3])
                if "momentum" in main:
                    st.caption("BN momentum changes nothing in training (in training mode BN normalizes with "
                               "each batch's own statistics); it only sets the running statistics eval mode "
                               "uses. Moving it recomputes them from the batch statistics recorded at every "
                               "step, without training again.")
        config = base.replace(**values)
        self._warn_url_notes()
        self._config_for_url = {k: v for k, v in config.to_query().items() if k in names}
        self._write_url()
        return config

    def _seeds_control(self) -> int:
        key = self.view_value("seeds", 1)
        raw = st.session_state[key]
        value = min(max(int(raw), 1), MAX_SEEDS) if isinstance(raw, (int, float)) and math.isfinite(raw) else 1
        if value != raw or not isinstance(raw, int):
            self.url_notes.append(f"seeds: {str(raw)[:20]} is outside 1 to {MAX_SEEDS}; using {value}")
            st.session_state[key] = value
        return int(self.view_control(
            st.number_input, "seeds", "Seeds", min_value=1, max_value=MAX_SEEDS, step=1,
            help="Train every run once per seed: the sidebar's seed, the next one, and so on. With 2 or more, "
                 "curves show the mean and a 95 % confidence band, numbers the mean ± the interval's half-width, "
                 "and each comparison a verdict paired by seed (the same seed gives both networks the same "
                 "data split and batches)."))

    def display_only(self, view: Mapping[str, Any]) -> None:
        """For a page that trains nothing (no :meth:`config`): read its display settings ``view``
        ({name: default}) from the link as :meth:`config` does, and say what in the link it ignored."""
        self._seed_from_url(Config(), (), view)
        with st.sidebar:
            _presentation_control()
        self._warn_url_notes()
        self._write_url()

    def _warn_url_notes(self) -> None:
        # A placeholder while display values from the link are still to be checked against their
        # control's options (known only once the page has its runs): _link_note adds to it then.
        if self.url_notes or st.session_state.get(f"{self.slug}.__from_link"):
            self._notes_box = st.empty()
            self._show_url_notes()

    def _show_url_notes(self) -> None:
        if self.url_notes:
            # a link with thousands of bad keys would otherwise show (and resend) megabytes of notes
            more = len(self.url_notes) - MAX_URL_NOTES
            self._notes_box.warning("Some settings in the link were adjusted: "
                                    + "; ".join(self.url_notes[:MAX_URL_NOTES])
                                    + (f"; and {more} more" if more > 0 else "") + ".")

    def _link_note(self, note: str) -> None:
        """A note about a link's display value found out of range after the notes were drawn (a
        layer, step or tap the page's runs do not have): added to the link's warning, which a
        ``?layer=99`` would otherwise never get (the value was snapped silently)."""
        self.url_notes = [*self.url_notes, note]
        st.session_state[f"{self.slug}.__url_notes"] = self.url_notes
        if self._notes_box is not None and self._drawing is None \
                and not getattr(get_script_run_ctx(), "fragment_ids_this_run", None):
            self._show_url_notes()
        else:  # inside a part: its own warning (the box above belongs to the page script)
            st.warning(f"A setting in the link was adjusted: {note}.")

    def _snap(self, key: str, options: Sequence[Any], fallback: Any = _GONE) -> None:
        """A display setting its control cannot show (from a link, or an option that is gone) becomes
        the nearest option (or ``fallback``); a value that came from the link says so."""
        pending = st.session_state.get(f"{self.slug}.__from_link", {})
        if key in st.session_state and st.session_state[key] not in options:
            value = _nearest(list(options), st.session_state[key]) if fallback is _GONE else fallback
            if key in pending:
                self._link_note(f"{key.rsplit('.', 1)[-1]}: {pending[key]} is not offered here; using {value!r}")
            st.session_state[key] = value
        pending.pop(key, None)   # checked: from now on the value is the page's own

    def _seed_from_url(self, base: Config, names: Sequence[str], view: Mapping[str, Any]) -> None:
        flag = f"{self.slug}.__url_read"
        if st.session_state.get(flag):
            self.url_notes = st.session_state.get(f"{self.slug}.__url_notes", [])
            return
        st.session_state[flag] = True
        params = {k: st.query_params.get_all(k) for k in st.query_params.keys()}
        cfg_params = {k: v for k, v in params.items() if k not in view and k != PRESENTATION}
        config, notes = from_query(cfg_params, base)
        if PRESENTATION in params:
            st.session_state[PRESENTATION], note = parse_view_value(PRESENTATION, params[PRESENTATION][-1], False)
            notes += [note] if note else []
        for key in cfg_params:
            if key in names:
                value = _widget_value(key, getattr(config, key))
                if value != getattr(config, key):
                    notes.append(f"{key}: {getattr(config, key)!r} is not offered here; using {value!r}")
                st.session_state[self._key(key)] = value
            elif key in {f.name for f in fields(Config)}:
                notes.append(f"{key} has no control on this page; ignored")
        from_link = {}   # display values the link set: _snap says so if their control cannot show them
        for key, default in view.items():
            if key in params:
                value, note = parse_view_value(key, params[key][-1], default)
                st.session_state[f"{self.slug}.view.{key}"] = value
                if note:       # already said (and the value replaced): one note per key
                    notes.append(note)
                else:
                    from_link[f"{self.slug}.view.{key}"] = quoted(str(params[key][-1]).strip())
        st.session_state[f"{self.slug}.__from_link"] = from_link
        self.url_notes = notes
        st.session_state[f"{self.slug}.__url_notes"] = notes

    def _write_url(self) -> None:
        query = dict(self._config_for_url)
        if st.session_state.get(PRESENTATION):  # in the link only when on: default links stay as they were
            query[PRESENTATION] = "1"
        for k in list(st.session_state.keys()):
            prefix = f"{self.slug}.view."
            if isinstance(k, str) and k.startswith(prefix):
                query[k[len(prefix):]] = str(st.session_state[k])
        if dict(st.query_params) != query:
            st.query_params.from_dict(query)

    def view_value(self, name: str, default: Any, options: Sequence[Any] | None = None, *,
                   fallback: Any = _GONE) -> str:
        """Session-state key for a display-only widget whose value the URL carries.

        Gives the setting its default; with ``options``, also snaps a value the control cannot show
        (from a link, or an option that is gone) to the nearest one (to ``fallback`` if given), and
        says so in the link's warning when the link set it. A part (:meth:`part`) that
        draws the setting's control itself needs this before it is drawn: it reads its settings first.
        """
        key = f"{self.slug}.view.{name}"
        if key not in st.session_state:
            st.session_state[key] = default
        if options is not None:
            self._snap(key, options, fallback)
        return key

    def view_settings(self, defaults: Mapping[str, Any],
                      coerce: Callable[[str, Any], tuple[Any, str | None]]) -> dict[str, Any]:
        """Give each display setting its default and make what a link put there showable.

        ``coerce(name, value)`` returns the value the control can show and a note (or None); the
        notes are shown in one warning. Call before the settings' widgets are created.
        """
        values, notes = {}, []
        for name, default in defaults.items():
            key = self.view_value(name, default)
            value, note = coerce(name, st.session_state[key])
            if value != st.session_state[key] or type(value) is not type(st.session_state[key]):
                st.session_state[key] = value
            values[name] = value
            if note:
                notes.append(note)
        if notes:
            st.warning("Some display settings in the link were adjusted: " + "; ".join(notes) + ".")
        return values

    def view_control(self, widget: Callable[..., Any], name: str, label: str, options: Sequence[Any] | None = None,
                     **kwargs: Any) -> Any:
        """A display-only control (layer, step, tap, log axis): redraws without retraining; kept in the URL.

        If parts of the page (:meth:`part`) are drawn with this setting, changing it reruns only
        those parts; otherwise the page script reruns (from the cache: no training either way).
        """
        key = f"{self.slug}.view.{name}"
        if st.session_state.get(f"{self.slug}.__resync") and key in st.session_state:
            st.session_state[key] = st.session_state[key]  # sent with the widget: the browser shows it again
        if "on_change" not in kwargs:
            kwargs.update(on_change=self._redraw_parts, args=(name,))
        # Kept when the control is not drawn: without it Streamlit drops the value on a page switch
        # (or a run that fails before the control), and the user's layer, tap, seeds, ... are gone
        # when they come back. The settings controls (_widget) are kept the same way.
        kwargs.setdefault("persist_state", "session")
        homes = st.session_state.setdefault(f"{self.slug}.__control_parts", {})
        if homes.get(name) != self._drawing:
            homes[name] = self._drawing
        if options is not None:
            self._snap(key, options)
            value = widget(label, options, key=key, **kwargs)
        else:
            value = widget(label, key=key, **kwargs)
        self._write_url()
        return value

    def view(self, name: str) -> Any:
        """The current value of a display setting (what its control shows now)."""
        return st.session_state[f"{self.slug}.view.{name}"]

    # ----- parts: what a display-only change redraws -------------------------------------------------
    def part(self, draw: Callable[..., None] | None = None, *,
             controls: Callable[[], None] | None = None) -> Callable[..., None]:
        """Decorator: draw ``draw`` here, now, as a part of the page a display change can redraw alone.

        The parameters of ``draw`` name the display settings it depends on (``def heatmap(layer, tap,
        log_color)``); it is called with their current values. When one of them changes, only the
        parts that take it rerun (a keyed ``st.fragment`` each): the page script, the other parts
        and their figures stay as they are, in the server and in the browser. Everything else
        ``draw`` uses (runs, config) is what this run of the page computed: a part reruns with it
        until the page script runs again.

        A control only one part depends on belongs inside that part (give its setting a value with
        :meth:`view_value`, options included, before the part): changing it reruns that part, as
        any widget in a fragment does. A control several parts depend on goes before them; its
        on_change reruns them (``st.rerun([...])``, which first stops the run Streamlit started).

        So a part must draw everything that depends on its settings (a note, a caption, a figure),
        and nothing outside a part may depend on a setting a part takes (a control's options, say):
        that would go stale. A part owns its layout (its elements go where it is called); errors
        inside it are shown inside it, as :func:`guard` shows them, and the rest of the page stays.

        ``controls`` (``@page.part(controls=fn)``) draws the part's own controls above its figure,
        but after it: the browser gets a changed figure before the controls it is redrawn with
        (what a redraw waits for). They are drawn even when ``draw`` fails: they are the way back.
        """
        if draw is None:
            return functools.partial(self.part, controls=controls)
        uses = tuple(inspect.signature(draw).parameters)
        missing = [n for n in uses if f"{self.slug}.view.{n}" not in st.session_state]
        if missing:
            raise ValueError(f"part {draw.__name__!r} takes {', '.join(missing)}: not display settings of this page "
                             "(create their controls, or give them a value with view_value, before the part)")
        key = f"{self.slug}.part.{draw.__name__}"
        self.parts[key] = uses
        st.session_state[f"{self.slug}.__parts"] = dict(self.parts)
        self._remember_settings()

        @st.fragment(key=key)
        def rerun_part() -> None:
            outer, self._drawing = self._drawing, key
            try:
                with guard():
                    above = st.container() if controls is not None else None
                    try:
                        draw(**{n: self.view(n) for n in uses})
                    finally:
                        if above is not None:
                            with above:
                                controls()
                    self._write_url()
                    self._record_views()
            finally:
                self._drawing = outer

        rerun_part()
        return draw

    def _redraw_parts(self, name: str) -> None:
        """on_change of a display control: have the parts drawn with ``name`` rerun, and only them.

        Returning normally keeps the run Streamlit started for the interaction: the part the
        control is in (the browser names the fragment of the widget it changed), or else the page
        script. So it returns when that run is already the one part that takes ``name``, and when
        the page script must run: no part takes ``name``, or a setting other than a display one
        changed in the same interaction (a test can change several at once; a browser changes one).
        Otherwise ``st.rerun(parts)`` replaces the run started (which costs that run's start and
        a garbage collection): for a control several parts depend on, and in AppTest, which runs
        the page script for every interaction.
        """
        targets = [key for key, uses in st.session_state.get(f"{self.slug}.__parts", {}).items() if name in uses]
        home = st.session_state.get(f"{self.slug}.__control_parts", {}).get(name)
        drawn_with = st.session_state.get(f"{self.slug}.__drawn_with")
        now = self._settings()
        # Compared on the settings the page was drawn with: a key that appeared since (a button's
        # state, which the browser reports once it has the button) is no change of settings.
        if not targets or drawn_with is None or any(now.get(k, _GONE) != v for k, v in drawn_with.items()):
            return
        running = getattr(get_script_run_ctx(), "fragment_ids_this_run", None)  # None: the page script
        if targets == [home] and running:
            return
        if running and home is None:
            return  # a control outside every part changes in a page run, never in a fragment's: see follow()
        try:
            st.rerun(targets)
        except StreamlitAPIException:  # a key this session's last run did not draw: rerun the page
            log.info("part(s) %s not found; rerunning the page", targets)

    def _settings(self) -> dict[str, Any]:
        """Every setting in the session except the display ones and bnviz's own bookkeeping."""
        view = f"{self.slug}.view."
        return {k: v for k, v in st.session_state.items()
                if isinstance(k, str) and not k.startswith(view) and ".__" not in k and _plain(v)}

    def _views(self) -> dict[str, Any]:
        prefix = f"{self.slug}.view."
        return {k: v for k, v in st.session_state.items() if isinstance(k, str) and k.startswith(prefix)}

    def _record_views(self) -> None:
        """The display settings the page (or a part) was just drawn with: what a check of
        :meth:`follow` compares the browser's values with."""
        st.session_state[f"{self.slug}.__views_drawn"] = self._views()

    # ----- following something that changes outside the page ---------------------------------------
    def follow(self, changed: Callable[[], bool], caption: str, every: float = 1.0) -> None:
        """Draw the page again when something outside it has changed (a run another process is
        writing): every ``every`` seconds a small part calls ``changed()`` and, if it says so,
        reruns the page. Only the check runs every ``every`` s; the page runs when there is news.

        A check never changes a display setting. The browser sends every widget's value with each
        check, and a browser still drawing the page (busy, or slow) can send, and show, a control's
        default instead of the value the page gave it (Streamlit 1.67, with the browser's CPU
        throttled). Display values a check brings are put back, and a page run a check asked for
        sends every control's value again (``__resync``), so the browser shows it.
        """
        @st.fragment(run_every=every)
        def check() -> None:
            with guard():
                if getattr(get_script_run_ctx(), "fragment_ids_this_run", None):  # a check, not the page's run
                    if self._put_back_views() or changed():
                        # the page run this asks for can bring the browser's values again (Streamlit
                        # folds a check requested meanwhile into it): it puts them back too (__init__)
                        st.session_state[f"{self.slug}.__checked"] = True
                        st.rerun()
                st.caption(f"{caption} (last checked {time.strftime('%H:%M:%S')}).")

        check()

    def _put_back_views(self) -> list[str]:
        """Give the display settings the values the page was last drawn with; the ones changed."""
        drawn = st.session_state.get(f"{self.slug}.__views_drawn", {})
        stale = [k for k, v in drawn.items() if st.session_state.get(k, _GONE) != v]
        for k in stale:
            st.session_state[k] = drawn[k]
        if stale:
            log.info("display values the page did not draw came with a check: %s; put back", stale)
            st.session_state[f"{self.slug}.__resync"] = True
        return stale

    def _remember_settings(self) -> None:
        st.session_state[f"{self.slug}.__drawn_with"] = self._settings()

    # ----- training ----------------------------------------------------------------------------
    def train(self, configs: Mapping[str, Config], *,
              live: Callable[[dict[str, History]], go.Figure | Sequence[go.Figure]] | None = None,
              compare: Sequence[tuple[str, str]] | None = None) -> dict[str, Run] | None:
        """Train (or fetch from the cache) one run per label; None when a config cannot train.

        Runs train in the server's worker processes (:mod:`bnviz.executor`), side by side, behind
        one queue shared by every session. Shows a progress bar, the place in that queue, a Stop
        button and, if ``live`` is given, a chart redrawn while the runs train. A stopped run's
        partial history is kept and shown until settings change.

        With :attr:`n_seeds` > 1 every config also trains at the following seeds (the page's own
        runs first: they are drawn while the others train); :attr:`seed_runs` holds them all, and
        a summary says each run's final accuracy over the seeds and a verdict for each pair in
        ``compare`` (default :func:`bnviz.seeds.default_pairs`). The returned runs are the page's
        own seed's.
        """
        for label, cfg in configs.items():
            try:
                check(cfg)
            except ConfigError as exc:
                st.error(f"**{label}: this configuration cannot train.** {exc}")
                return None
        n = seeds.within_run_budget(self.n_seeds, len(configs), MAX_RUNS)
        if n != self.n_seeds:
            st.warning(f"This page trains {len(configs)} networks; at most {MAX_RUNS} runs are trained at once, so "
                       f"{n} seed(s) each instead of {self.n_seeds}.")
        flat = seeds.expand(configs, n)
        store = run_store()
        stop_key, stopped_key = f"{self.slug}.__stop", f"{self.slug}.__stopped"
        partials: dict[Config, History] = st.session_state.setdefault(f"{self.slug}.__partial", {})
        # Every run cut short by a rerun (a control moved mid-training) leaves its partial history
        # here: keep the newest few, or a long session piles them up until it ends.
        for stale in list(partials)[:-PARTIALS_KEPT]:
            del partials[stale]
        if st.session_state.get(stop_key):
            st.session_state[stopped_key] = set(flat.values())
        stopped: set[Config] = st.session_state.get(stopped_key, set())
        if not stopped.issuperset(flat.values()):
            stopped = st.session_state[stopped_key] = set()

        runs: dict[str, Run] = {}
        todo = []
        for label, cfg in flat.items():
            hit = store.get(cfg)
            if hit is not None:
                runs[label] = hit
            elif cfg in stopped:
                if cfg in partials:
                    runs[label] = Run(cfg, partials[cfg], model=None, dataset=None)
            else:
                todo.append(label)
        if todo:
            self._train_live(flat, list(configs), todo, runs, store, partials, stop_key, live)
        elif stopped:
            st.info("Training was stopped; the charts show the steps recorded so far.")
            if st.button("Train again", key=f"{self.slug}.__resume"):
                st.session_state[stopped_key] = set()
                st.rerun()
        for label, run in runs.items():
            report_run(label, run.history)
        # The seeds every label has a run of (a run stopped before its first record has none): the
        # k-th run of each label is then the same seed's, which is what pairs them.
        named = {label: [seeds.seed_label(label, cfg.seed + k, cfg.seed) for k in range(n)]
                 for label, cfg in configs.items()}
        common = [k for k in range(n) if all(names[k] in runs for names in named.values())]
        self.seed_runs = {label: [runs[names[k]] for k in common] for label, names in named.items()}
        if n > 1:
            self._seed_summary(compare)
        return {label: runs[label] for label in configs if label in runs}

    def _seed_summary(self, compare: Sequence[tuple[str, str]] | None) -> None:
        """Final accuracy over seeds per run (mean ± half the 95 % interval) and a verdict per pair."""
        histories = {label: [r.history for r in rs] for label, rs in self.seed_runs.items() if rs}
        if not histories:
            return
        summary = seeds.summarize(histories, [r.config.seed for r in next(iter(self.seed_runs.values()))], compare)
        first = summary.seeds[0]
        with st.container(border=True):
            st.markdown(f"**{summary.title}**")
            cols = st.columns(min(len(summary.headlines), 4))
            for i, (label, text) in enumerate(summary.headlines.items()):
                cols[i % len(cols)].metric(f"final test accuracy, {label}", text,
                                           help=seeds.accuracy_help(len(summary.seeds)).capitalize() + ".")
            for line in summary.verdicts:
                st.markdown(f"- {line}")
            st.caption(summary.caption + f" Charts that show a single run show seed {first} (the sidebar's seed).")

    def _train_live(self, configs, own, todo, runs, store, partials, stop_key, live) -> None:
        """Submit ``todo`` to the executor and show them train: progress, queue place, live chart.

        ``own``: the labels of the page's own seed; the live chart shows those. If the page is
        interrupted (a rerun, Stop) the runs are released: cancelled after a grace period unless
        the next run of the page asks for them again."""
        pool = executor.shared()
        tasks = {label: pool.submit(executor.train_packed, configs[label], self.momentum_control,
                                    key=RunStore.key(configs[label]))
                 for label in todo}
        # Labels with the very same config share one task (the executor runs a config once): every
        # one of them gets its run.
        labels_of: dict[int, list[str]] = {}
        for label, task in tasks.items():
            labels_of.setdefault(task.id, []).append(label)
        unique = list({task.id: task for task in tasks.values()}.values())
        total_steps = sum(configs[label].steps for label in todo)
        try:
            with st.status(f"Training {len(todo)} network(s)…", expanded=True) as status:
                stop_slot = st.empty()   # emptied when the data is missing: nothing is left to stop
                stop_slot.button("Stop", key=stop_key, help="Stop training and show what has been recorded so far.")
                waiting = st.empty()
                bar = st.progress(0.0)
                # One slot per live figure, in a container made now: a slot is only ever a chart
                # or nothing (an element turned into a block and back confuses AppTest's reading).
                live_box, live_slots = (st.container() if live is not None else None), []
                last_draw, drawn_news, drawn_snapshots = 0.0, False, False
                seen: dict[str, History] = {}                # the record of each drawn run last seen
                sent = _Unchanged()
                for task in pool.as_completed(unique, tick=0.25):
                    if task is not None:
                        try:
                            run = executor.unpack(task.result())
                        except (DataNotFoundError, DataFormatError) as exc:
                            # expanded: without it the browser collapses the box, and the message
                            # saying which files to put where is hidden under "Data missing"
                            status.update(label="Data missing", state="error", expanded=True)
                            stop_slot.empty()
                            bar.empty()
                            st.error(str(exc))
                            st.stop()
                        for label in labels_of[task.id]:
                            runs[label] = run
                        if run.history.finished or run.history.diverged_at is not None:
                            store.put(run.config, run)
                        partials.pop(run.config, None)
                        drawn_news = True
                    live_now = [t for t in tasks.values() if not t.done()]
                    so_far = {lab: t.progress[2] for t in live_now for lab in labels_of[t.id]
                              if t.progress is not None and t.progress[2] is not None}
                    for lab, history in so_far.items():
                        if len(history.snapshots):  # a run stopped before its first step has nothing to show
                            partials[configs[lab]] = history
                        if lab in own and seen.get(lab) is not history:  # a new record of a drawn run
                            seen[lab], drawn_news = history, True
                    done = sum(configs[lab].steps for lab, t in tasks.items() if t.done())
                    done += sum(t.progress[0] for t in live_now if t.progress is not None)
                    running = [labels_of[t.id][0] for t in live_now if t.state == executor.RUNNING]
                    sent.update(bar.progress, round(min(done / total_steps, 1.0), 2),
                                 text=f"{len(tasks) - len(live_now)} of {len(tasks)} done"
                                      + (f"; training {', '.join(running[:3])}" if running else ""))
                    sent.update(waiting.info, _queue_note(pool, live_now), otherwise=waiting.empty)
                    now = time.monotonic()
                    if live_box is not None and drawn_news:
                        shown = {lab: runs[lab].history if lab in runs else so_far.get(lab) for lab in own}
                        shown = {lab: h for lab, h in shown.items() if h is not None}
                        # The first recorded steps are drawn at once (the live histograms appear);
                        # after that at most every LIVE_REDRAW_S.
                        first_snapshots = not drawn_snapshots and any(len(h.snapshots) for h in shown.values())
                        if shown and (first_snapshots or now - last_draw > LIVE_REDRAW_S):
                            drawn_snapshots = drawn_snapshots or first_snapshots
                            last_draw, drawn_news = now, False
                            # a key of its own per drawing: two drawings with the same content would collide
                            self._live_draws += 1
                            drawn = live(shown)
                            for i, fig in enumerate([drawn] if isinstance(drawn, go.Figure) else drawn):
                                if i == len(live_slots):
                                    live_slots.append(live_box.empty())
                                live_slots[i].plotly_chart(fig, theme=None,
                                                           key=f"{self.slug}.live.{self._live_draws}.{i}")
                status.update(label="Training done", state="complete", expanded=False)
                for slot in live_slots:
                    slot.empty()
        finally:
            for task in tasks.values():
                if not task.done():
                    pool.release(task, grace=RELEASE_GRACE_S)

    # ----- charts and exports ----------------------------------------------------------------------
    def chart(self, fig: go.Figure, name: str, *, caption: str | None = None, drawn: bool = False) -> None:
        """Show a figure with its export buttons and remember it for "Download all (ZIP)".

        ``drawn``: the page already showed ``fig`` (the home page draws its first chart before this
        module, and torch with it, is imported); add only its caption, export buttons and ZIP entry.
        """
        key = export.safe_filename(name)
        if st.session_state.get(PRESENTATION):
            fig = export.presentation(fig)  # on screen and in every export alike
        self.figures[name] = fig
        if not drawn:
            # theme=None: the page shows the figure's own style, the same one the exported PNG has
            st.plotly_chart(fig, config=export.modebar_config(name), key=f"{self.slug}.chart.{key}", theme=None)
        if caption:
            st.caption(caption)
        if export.chromium_path() is None:
            st.caption("Server-side PNG export needs Chromium. " + export.CHROMIUM_HELP)
        else:
            # Made on click (Chromium renders them): drawing the page renders nothing.
            with st.container(horizontal=True):
                for fmt in export.IMAGE_FORMATS:
                    st.download_button(f"Download {fmt.upper()}", data=functools.partial(_image, fig, fmt),
                                       file_name=f"{key}.{fmt}", mime=export.MIME_TYPES[fmt],
                                       key=f"{self.slug}.{fmt}.{key}", on_click="ignore")

    def animation(self, name: str, make: Callable[[], Any]) -> None:
        """Download buttons for an animation of recorded numbers (``make()`` returns a
        :class:`bnviz.animate.HistogramAnimation`): a GIF, and an MP4 where imageio-ffmpeg is installed.
        Encoded on click, with the Presentation setting as it is now; the GIF also goes in the page's ZIP.
        """
        from . import animate

        key = export.safe_filename(name)
        encoders = {"gif": animate.gif, "mp4": animate.mp4} if animate.mp4_available() else {"gif": animate.gif}
        presentation = bool(st.session_state.get(PRESENTATION))

        def encoded(fmt: str) -> bytes:
            return encoders[fmt](make(), presentation=presentation)

        self.animations[f"{key}.gif"] = functools.partial(encoded, "gif")
        with st.container(horizontal=True):
            for fmt in encoders:
                st.download_button(f"Download {fmt.upper()}: animation over training",
                                   data=functools.partial(encoded, fmt), file_name=f"{key}.{fmt}",
                                   mime=export.MIME_TYPES[fmt],
                                   key=f"{self.slug}.{fmt}.{key}", on_click="ignore",
                                   help=f"An animation of the {name}: one frame per recorded step (at most "
                                        f"{animate.MAX_FRAMES}), the same bins and axes on every frame, "
                                        f"{animate.FPS} frames per second.")

    def download_all(self) -> None:
        """The "Download all (ZIP)" button: the figures shown when it is clicked.

        The ZIP is made on click from ``self.figures``, which the page's parts update when a display
        change redraws them (the button itself is not redrawn then).
        """
        self._remember_settings()
        self._record_views()
        st.session_state.pop(f"{self.slug}.__resync", None)
        if not self.figures:
            return
        figures, animations = self.figures, self.animations
        st.divider()
        st.download_button("Download all (ZIP): every chart as PNG, SVG and PDF, and its data as CSV",
                           data=lambda: export.figures_zip(dict(figures),
                                                           extra={n: make() for n, make in animations.items()}),
                           file_name=f"bnviz-{self.slug}.zip",
                           mime="application/zip", key=f"{self.slug}.zip", on_click="ignore")


def _plain(value: Any) -> bool:
    """A value a settings snapshot keeps: what widgets hold (numbers, text, lists of them)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and all(_plain(v) for v in value)


def _image(fig: go.Figure, fmt: str) -> bytes:
    return export.figure_image(fig, fmt, width=900)


def _presentation_control() -> None:
    """The Presentation setting (URL key ``presentation``), the same on every page: every chart,
    on screen and exported, with larger fonts and thicker lines (:func:`bnviz.export.presentation`).
    A display setting: the page is drawn again from the runs it has; nothing trains again."""
    st.toggle("Presentation", key=PRESENTATION, persist_state="session",
              help="Larger fonts and thicker lines in every chart and its downloads, for a projector. "
                   "Nothing trains again.")


def parse_view_value(name: str, raw: str, default: Any) -> tuple[Any, str | None]:
    """Validate a display-only URL value against its default's type; never raises."""
    raw = str(raw)[:64]
    if isinstance(default, bool):
        value = raw.strip().lower()
        if value in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value in ("1", "true", "yes", "on"), None
        # ?log_y=maybe was read as off without a word: say so
        return default, f"{name}: {quoted(raw)} is not on or off (1 or 0); kept {'on' if default else 'off'}"
    if isinstance(default, int):
        try:
            number = float(raw)
            value = int(number)
        except (ValueError, OverflowError):
            return default, f"{name}: {raw[:20]!r} is not a whole number; kept {default}"
        if value != number:   # ?layer=1.5 was cut to 1 without a word
            return value, f"{name}: {raw[:20]} is not a whole number; using {value}"
        return value, None
    if isinstance(default, float):
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            return default, f"{name}: {raw[:20]!r} is not a number; kept {default:g}"
        return value, None
    return raw, None


def report_run(label: str, history: History) -> None:
    """Explain a run that did not finish normally."""
    if history.diverged_at is not None:
        lr = history.config.lr
        st.warning(f"**{label}: training diverged at step {history.diverged_at}**: the loss became NaN or "
                   f"infinite (the updates grew without bound). The charts show the steps before that. "
                   f"Try a learning rate of {lr / 10:g} or lower, or add normalization.")
    elif history.stopped_at is not None:
        st.info(f"{label}: stopped at step {history.stopped_at} of {history.config.steps}.")


class RunStore:
    """A bounded LRU of finished runs keyed by the full Config, shared by all sessions.

    Runs are read-only once stored: a page that changes a model (e.g. recomputing BN statistics)
    works on a copy.
    """

    def __init__(self, capacity: int = 96):
        self.capacity = capacity
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._traced: dict[str, str] = {}   # training key -> key of a stored run of that training
        self._lock = threading.Lock()

    @staticmethod
    def key(config: Config) -> str:
        return json.dumps(asdict(config), sort_keys=True)

    def get(self, config: Config) -> Run | None:
        """The stored run of ``config``; or, when only the same training with another BN momentum
        is stored, that run with ``config``'s momentum derived from its batch statistics
        (:func:`bnviz.train.with_momentum`: milliseconds, no training; momentum never changes
        training itself)."""
        with self._lock:
            run = self._runs.get(self.key(config))
            if run is not None:
                self._runs.move_to_end(self.key(config))
                return run
            traced = self._traced.get(self.training_key(config)) if isinstance(config, Config) else None
            source = self._runs.get(traced) if traced is not None else None
        derived = with_momentum(source, config.momentum) if source is not None else None
        if derived is not None:
            self.put(config, derived)
        return derived

    def put(self, config: Config, run: Run) -> None:
        with self._lock:
            self._runs[self.key(config)] = run
            self._runs.move_to_end(self.key(config))
            if isinstance(config, Config) and isinstance(run, Run):
                self._traced[self.training_key(config)] = self.key(config)
            while len(self._runs) > self.capacity:
                gone, _ = self._runs.popitem(last=False)
                self._traced = {t: k for t, k in self._traced.items() if k != gone}

    def training_key(self, config: Config) -> str:
        """What training depends on: the config but its BN momentum."""
        return self.key(momentum_free(config))

    def __len__(self) -> int:
        return len(self._runs)


@st.cache_resource
def run_store() -> RunStore:
    return RunStore()


class ResultStore(RunStore):
    """RunStore's bounded LRU, shared by all sessions, for any hashable key: results of experiments
    that are not plain training runs (see :func:`computed`). Read-only once stored, like runs."""

    @staticmethod
    def key(key: Hashable) -> Hashable:
        return key


@st.cache_resource
def result_store() -> ResultStore:
    return ResultStore(capacity=32)


def _queue_note(pool: executor.Executor, tasks: Sequence[executor.Task]) -> str | None:
    """Where a session's waiting runs are in the server's queue (while none of them runs), or None."""
    queued = [t for t in tasks if t.state == executor.QUEUED]
    if not queued or any(t.state == executor.RUNNING for t in tasks):
        return None
    return (f"Waiting for a free training slot: {pool.position(queued[0])} training(s) of other sessions are "
            f"queued before yours, and this server trains at most {pool.slots} at a time. Stop (or leaving the "
            "page) leaves the queue.")


class _Unchanged:
    """Sends an element's new state only when it changed. A page waiting for runs looks four times a
    second; re-sending an unchanged progress bar each time costs every open browser a redraw (with
    32 sessions on two cores, the browsers' CPU is what the workers would train with)."""

    def __init__(self) -> None:
        self._last: dict[Callable[..., Any], Any] = {}

    def update(self, show: Callable[..., Any], value: Any, *, otherwise: Callable[[], Any] | None = None,
               **kwargs: Any) -> None:
        state = (value, tuple(sorted(kwargs.items())))
        if self._last.get(show, _GONE) == state:
            return
        self._last[show] = state
        if value is None and otherwise is not None:
            otherwise()
        else:
            show(value, **kwargs)


@st.cache_resource
def job_store() -> ResultStore:
    """Results of single independent runs (a point of a sweep, one probed network): small, many."""
    return ResultStore(capacity=512)


def computed_many(label: str, fn: Callable[..., Any], argss: Sequence[tuple]) -> list[Any]:
    """``[fn(*args) for args in argss]``, each computed once for all sessions, side by side in the
    server's worker processes (:mod:`bnviz.executor`), with a progress bar and the place in the queue.

    ``fn`` is sent to a worker by name: a module-level function, called ``fn(*args, report=...)``
    (``report(done, total, payload)``, which it may ignore). For independent runs: the points of a
    sweep, the networks of an experiment, each at several seeds.
    """
    store = job_store()
    keys = [(fn.__module__, fn.__qualname__, args) for args in argss]
    results = {k: store.get(k) for k in keys}
    todo = list(dict.fromkeys(k for k in keys if results[k] is None))
    if todo:
        pool = executor.shared()
        tasks = [pool.submit(fn, *k[2], key=k) for k in todo]
        bar, waiting = st.progress(0.0, text=f"{label}…"), st.empty()
        sent = _Unchanged()
        try:
            for task in pool.as_completed(tasks, tick=0.25):
                if task is not None:
                    results[task.key] = task.result()
                    store.put(task.key, results[task.key])
                done = sum(t.done() for t in tasks)
                sent.update(bar.progress, done / len(tasks), text=f"{label}: {done} of {len(tasks)} runs done")
                sent.update(waiting.info, _queue_note(pool, tasks), otherwise=waiting.empty)
        finally:
            for task in tasks:
                if not task.done():
                    pool.release(task, grace=RELEASE_GRACE_S)
        bar.empty()
        waiting.empty()
    return [results[k] for k in keys]


def computed(label: str, fn: Callable[..., Any], *args: Hashable) -> Any:
    """``fn(*args, report)``, computed once per distinct ``args`` for all sessions, with a progress bar.

    For expensive pure computations beyond :meth:`Page.train` (an experiment with its own training
    loop). ``fn`` calls ``report(done, total, text)`` as it goes. Not ``st.cache_data``: that would
    record the progress bar's updates as part of the result and fail to replay them.
    """
    store = result_store()
    key = (fn.__module__, fn.__qualname__, args)
    hit = store.get(key)
    if hit is not None:
        return hit
    bar = st.progress(0.0, text=f"{label}…")

    def report(done: int, total: int, text: str) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{label}: {text}")
    result = fn(*args, report)
    store.put(key, result)
    bar.empty()
    return result


@contextmanager
def guard() -> Iterator[None]:
    """Turn any unexpected error into a message on the page (the traceback goes to the server log).

    Also marks the run busy for the idle garbage collector (:mod:`bnviz.idle_gc`): every page and
    part runs inside one, so no full collection starts while one is in progress."""
    with idle_gc.SHARED.busy():
        try:
            yield
        except ConfigError as exc:
            st.error(str(exc))
        except (DataNotFoundError, DataFormatError) as exc:
            st.error(str(exc))
        except export.ExportUnavailable as exc:
            st.warning(str(exc))
        except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback reaches a user
            log.error("unexpected error\n%s", traceback.format_exc())
            st.error(f"Something went wrong ({type(exc).__name__}: {str(exc)[:300]}). Your settings are kept: "
                     "change one and try again. If it persists, please report it with the page's URL.")
