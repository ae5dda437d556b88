"""The ``bnviz`` command (also ``python -m bnviz``): start the app, export figures, inspect recorded runs.

    bnviz app [--runs DIR] [--port N] [--address A] [-- STREAMLIT-OPTIONS]
    bnviz export --out DIR [--page NAME] [--config URL-or-file] [--no-png] [--format png svg pdf]
                 [--presentation] [--animate]
    bnviz runs [DIR]
    bnviz doctor RUN_DIR [--json]

Each subcommand imports what it needs when it runs: ``bnviz --help`` and ``bnviz app`` start without
torch or plotly (the app imports them in its own process); ``export`` imports the views, ``runs``
and ``doctor`` the run store.

Exit status: 0 success; 1 ``export`` wrote only part of what was asked (see below) or ``doctor``
found a problem; 2 usage error (bad arguments, a missing or damaged run, an unreadable
configuration), reported on one line without a traceback; 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.parse
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO

from .config import Config, ConfigError, from_query, problems

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from .views import View

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_PROBLEM = 1   # `bnviz doctor` found at least one finding of severity "problem"
FIELDS = tuple(f.name for f in fields(Config))
PRESENTATION_KEY = "presentation"   # the link's key of the app's Presentation setting (bnviz.ui)
RUNS_ENV = "BNVIZ_RUNS_DIR"   # where the app's "Your runs" page (and `bnviz runs`) look; default ./runs

EXPORT_DOC = """Regenerate the app's figures as PNG (SVG, PDF) and CSV files, without a browser session.

For slides and papers: every page's figures at their default display settings, from the page's
default configuration or one given as a shared link (its query string) or a JSON file::

    bnviz export --out figs                       # every page
    bnviz export --out figs --page why --config "http://localhost:8501/Why_BN_helps?steps=500"
    bnviz export --out figs --page figure1 --config my-run.json --no-png
    bnviz export --out figs --page histograms --animate --format png svg pdf --presentation

`python -m bnviz export` takes the same arguments. Files go to OUT/<page>/<figure>.png and .csv
(the CSV holds every trace's data, tidy), and .svg / .pdf with --format. Images are rendered by
one headless Chromium shared by all figures (bnviz.export). --presentation enlarges fonts and
lines for a projector (as the app's "Presentation" setting; a link with presentation=1 asks for it
too). --animate also writes the animations of the pages that have one (Activation histograms: the
layer histograms at every recorded step) as OUT/<page>/<name>.gif, and .mp4 when the
imageio-ffmpeg package is installed; animations are drawn without a browser.

Exit status: 0 when everything asked for was written; 1 when the CSVs were written but image export
was unavailable or failed (the message says how to install Chromium; a script that asked for images
must not mistake a partial export for success, and --no-png asks for CSVs only); 2 for a
usage error (unknown page, unreadable or invalid configuration, missing data files, an output
folder that cannot be created), reported before anything is trained or written; 1 as well when a
file cannot be written midway; 130 when interrupted.
"""


def parse_flag(raw: str) -> bool:
    """An on/off value of a link, read as the app reads it (1, true, yes, on)."""
    return str(raw).lower() in ("1", "true", "yes", "on")


class UsageError(Exception):
    """Bad command-line input; the message says what to change."""


# ----- configuration -------------------------------------------------------------------------------
def _json_value(name: str, value: Any) -> str:
    """A JSON value as the query-string text :func:`bnviz.config.from_query` parses."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise UsageError(f"setting {name!r} must be a single number, text, true/false or null, not {type(value).__name__}")


def read_settings(spec: str) -> dict[str, str]:
    """The raw settings of ``--config``: an existing JSON file of Config fields, or a URL / query string.

    Raises :class:`UsageError` for an unreadable file, bad JSON, a JSON value that is not an object
    of single values, or unknown field names in a file (a link's unknown keys only warn, because
    links carry the pages' display settings too).
    """
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read configuration file {path}: {exc}") from None
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(values, dict):
            raise UsageError(f"{path} must hold a JSON object of Config fields, e.g. {{\"steps\": 500}}")
        unknown = [k for k in values if k not in FIELDS]
        if unknown:
            raise UsageError(f"{path}: unknown setting(s) {', '.join(map(repr, unknown))}; "
                             f"valid ones: {', '.join(FIELDS)}")
        return {k: _json_value(k, v) for k, v in values.items()}
    parsed = urllib.parse.urlsplit(spec)
    if "?" in spec or parsed.scheme in ("http", "https"):
        return {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
    raise UsageError(f"--config {spec!r}: no such file, and not a link with a query string "
                     "(e.g. 'http://localhost:8501/?steps=500' or '?steps=500')")


def page_config(view: View, settings: Mapping[str, str]) -> tuple[Config, list[str]]:
    """``view``'s default configuration with ``settings`` applied, and notes about what was adjusted.

    Raises :class:`UsageError` when the result cannot train or its data files are missing/broken.
    """
    from .data import DataFormatError, DataNotFoundError, load

    config, notes = from_query(settings, view.default)
    found = problems(config)
    if found:
        raise UsageError(f"page {view.slug!r}: this configuration cannot train. " + " ".join(found))
    try:
        load(config)   # every page trains on this data set: a missing file is reported before any work
    except (DataNotFoundError, DataFormatError) as exc:
        raise UsageError(f"page {view.slug!r}: {exc}") from None
    return config, notes


# ----- progress --------------------------------------------------------------------------------------
class Progress:
    """Plain-text progress on a stream: ``[3/12] why: loss landscape: with BN: step 100/300``.

    On a terminal the line is rewritten in place; otherwise (a log file, CI) a line is printed at
    most every ``interval`` seconds, plus one when each job starts.
    """

    def __init__(self, total: int, stream: TextIO = sys.stderr, interval: float = 2.0):
        self.total, self.stream, self.interval = total, stream, interval
        self.job, self.name, self.last = 0, "", 0.0
        self.tty = stream.isatty()
        self.open_line = False   # a terminal line is being rewritten in place

    def start(self, name: str) -> None:
        self.job += 1
        self.name = name
        self._show(f"[{self.job}/{self.total}] {name}", force=True)

    def update(self, detail: str) -> None:
        self._show(f"[{self.job}/{self.total}] {self.name}: {detail}")

    def message(self, text: str) -> None:
        self._end_line()
        print(text, file=self.stream, flush=True)

    def _show(self, line: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(100))
            self.stream.flush()
            self.open_line = True
        elif force or now - self.last >= self.interval:
            print(line, file=self.stream, flush=True)
        self.last = now

    def _end_line(self) -> None:
        if self.open_line:
            self.stream.write("\n")
            self.open_line = False

    def close(self) -> None:
        self._end_line()


def _figures(view: View, config: Config, runs: Mapping, progress: Progress) -> dict[str, go.Figure]:
    """``view.figures``; views whose figures run experiments of their own (e.g. "why") take a
    ``progress(done, total, text)`` keyword, which we feed to the progress line."""
    if "progress" in inspect.signature(view.figures).parameters:
        return view.figures(config, runs, progress=lambda done, total, text: progress.update(text))
    return view.figures(config, runs)


# ----- export ---------------------------------------------------------------------------------------
def animations(view: View, config: Config, runs: Mapping) -> dict[str, Any]:
    """The animations a view offers (name -> :class:`bnviz.animate.HistogramAnimation`): a view's
    module may define ``animations(config, runs)``; most have none."""
    module = importlib.import_module(view.figures.__module__)
    make = getattr(module, "animations", None)
    return make(config, runs) if make is not None else {}


def export_pages(views: Sequence[View], configs: Mapping[str, Config], out: Path, images: Sequence[str],
                 progress: Progress, *, presentation: bool = False, animate: bool = False
                 ) -> tuple[list[Path], str | None]:
    """Train, draw and write every view's figures (CSV, and each of ``images``: png, svg, pdf),
    and with ``animate`` its animations (GIF, and MP4 when an encoder is installed). Returns the
    files written and, if some images could not be made, why."""
    from . import animate as animation
    from . import export
    from .figures.common import WIDTH
    from .record import History
    from .train import train

    written: list[Path] = []
    image_problem: str | None = None
    video = ("gif", "mp4") if animation.mp4_available() else ("gif",)
    for view in views:
        config = configs[view.slug]
        runs = {}
        for label, cfg in view.runs(config).items():
            progress.start(f"{view.slug}: training {label}")

            def report(done: int, total: int, history: History) -> None:
                progress.update(f"step {done}/{total}")
            runs[label] = train(cfg, report)
        progress.start(f"{view.slug}: drawing figures")
        figures = _figures(view, config, runs, progress)
        if presentation:
            figures = {name: export.presentation(fig) for name, fig in figures.items()}
        folder = out / view.slug
        folder.mkdir(parents=True, exist_ok=True)
        # Named as in the page's "Download all (ZIP)": the same helper disambiguates equal stems.
        stems = export._unique([export.safe_filename(name) for name in figures], "{}-{}")
        for (name, fig), stem in zip(figures.items(), stems):
            progress.update(f"writing {stem}")
            csv_path = folder / f"{stem}.csv"
            csv_path.write_text(export.figure_csv(fig), encoding="utf-8")
            written.append(csv_path)
            if images and image_problem is None:
                try:
                    # one batch per figure: its formats render side by side in the browser's tabs
                    blobs = export.figure_images([(fig, fmt) for fmt in images], width=WIDTH)
                except export.ExportUnavailable as exc:
                    image_problem = str(exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - a render failure must not lose the other files
                    image_problem = f"rendering {stem} failed ({type(exc).__name__}: {str(exc)[:200]})"
                    continue
                for fmt, data in zip(images, blobs):
                    path = folder / f"{stem}.{fmt}"
                    path.write_bytes(data)
                    written.append(path)
        if animate:
            for name, anim in animations(view, config, runs).items():
                stem = export.safe_filename(name)
                for fmt in video:
                    progress.update(f"writing {stem}.{fmt}")
                    path = folder / f"{stem}.{fmt}"
                    encode = animation.gif if fmt == "gif" else animation.mp4
                    path.write_bytes(encode(anim, presentation=presentation))
                    written.append(path)
    return written, image_problem


def run_export(args: argparse.Namespace, stream: TextIO) -> int:
    """``bnviz export``: see :data:`EXPORT_DOC`."""
    import torch

    from . import export
    from .animate import mp4_available
    from .data import DataFormatError, DataNotFoundError
    from .views import registry

    # One intra-op thread, as the app uses: the exported numbers are the ones the page shows.
    torch.set_num_threads(1)
    started = time.monotonic()
    try:
        views = registry()
        if args.page is not None and args.page not in views:
            raise UsageError(f"unknown page {args.page!r}; valid pages: {', '.join(views)}")
        chosen = [views[args.page]] if args.page else list(views.values())
        settings = read_settings(args.config) if args.config else {}
        # a display setting of every page, not a Config field: taken here, not warned about
        presentation = args.presentation or parse_flag(settings.pop(PRESENTATION_KEY, "0"))
        configs, notes = {}, []
        for view in chosen:
            configs[view.slug], page_notes = page_config(view, settings)
            notes += [n for n in page_notes if n not in notes]
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the output folder {args.out}: {exc.strerror or exc}") from None
    except UsageError as exc:
        print(f"error: {exc}", file=stream)
        return EXIT_USAGE
    for note in notes:
        print(f"warning: {note}", file=stream)

    progress = Progress(sum(len(v.runs(configs[v.slug])) + 1 for v in chosen), stream)
    try:
        images = () if args.no_png else tuple(dict.fromkeys(args.format))
        written, image_problem = export_pages(chosen, configs, args.out, images, progress,
                                              presentation=presentation, animate=args.animate)
    except KeyboardInterrupt:
        progress.message("interrupted")
        return EXIT_INTERRUPTED
    except (ConfigError, DataNotFoundError, DataFormatError) as exc:
        progress.message(f"error: {exc}")
        return EXIT_USAGE
    except OSError as exc:   # disk full, permissions changed under us: what was written stays
        progress.message(f"error: cannot write {exc.filename or args.out}: {exc.strerror or exc}")
        return EXIT_PARTIAL
    progress.close()
    kinds = Counter(p.suffix[1:].upper() for p in written)
    print(f"wrote {len(written)} files ({', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))}) to "
          f"{args.out} in {time.monotonic() - started:.1f} s", file=stream)
    if args.animate and not mp4_available():
        print("MP4 not written: it needs the imageio-ffmpeg package (pip install imageio-ffmpeg); the GIF is "
              "there.", file=stream)
    if image_problem:
        print(f"{'/'.join(f.upper() for f in images)} images are missing: {image_problem}", file=stream)
        if export.CHROMIUM_HELP not in image_problem:
            print(export.CHROMIUM_HELP, file=stream)
        return EXIT_PARTIAL
    return EXIT_OK


# ----- app ------------------------------------------------------------------------------------------
PACKAGE = Path(__file__).resolve().parent
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def app_script() -> Path:
    """The app's entry script, with its ``pages/`` folder next to it.

    An installed copy (``pip install .``) has them in the package as ``bnviz/_app/`` (see
    pyproject.toml), with ``.streamlit/config.toml``, which Streamlit reads next to the script; a
    source checkout (editable install, or the repository on PYTHONPATH) has them at the root.
    """
    candidates = (PACKAGE / "_app" / "app.py", PACKAGE.parent / "app.py")
    for script in candidates:
        if script.is_file() and (script.parent / "pages").is_dir():
            return script
    raise UsageError(f"cannot find the app: neither {candidates[0]} nor {candidates[1]} exists (with a pages/ "
                     "folder beside it). Reinstall bnviz (pip install .) or run it from a clone of the repository.")


def streamlit_command(script: Path, address: str, port: int | None = None,
                      extra: Sequence[str] = ()) -> list[str]:
    """``python -m streamlit run`` for ``script`` with this command's options.

    Every other setting (XSRF protection, no usage statistics, no file watcher, ...) comes from the
    ``.streamlit/config.toml`` beside the script. Address and headless mode are passed explicitly
    as well, so they hold wherever the command is started from. ``extra`` options (given after
    ``--``) come last: Streamlit keeps the last value of an option.
    """
    cmd = [sys.executable, "-m", "streamlit", "run", str(script),
           "--server.address", address, "--server.headless", "true"]
    if address not in WILDCARD_ADDRESSES:
        cmd += ["--browser.serverAddress", address]   # the URL Streamlit prints and accepts as an origin
    if port is not None:
        cmd += ["--server.port", str(port)]
    return cmd + list(extra)


def _exec(cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """Become the Streamlit server (POSIX): Ctrl-C and a supervisor's SIGTERM reach it directly and
    no wrapper process is left behind. Elsewhere, run it and wait."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execve(cmd[0], list(cmd), dict(env))
    try:
        return subprocess.call(list(cmd), env=dict(env))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def run_app(args: argparse.Namespace, stream: TextIO) -> int:
    """``bnviz app``: ``streamlit run`` the app in this Python."""
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise UsageError(f"Streamlit is not installed for {sys.executable}: pip install bnviz (or -r requirements.txt)")
    script = app_script()
    env = dict(os.environ)
    if args.runs is not None:
        runs = Path(args.runs).expanduser().resolve()
        if runs.exists() and not runs.is_dir():
            raise UsageError(f"--runs {args.runs}: not a folder")
        env[RUNS_ENV] = str(runs)
    extra = [a for a in args.streamlit_args if a != "--"]
    cmd = streamlit_command(script, args.address, args.port, extra)
    runs_text = env.get(RUNS_ENV) or f"{Path('runs').resolve()} (the default, ./runs)"
    print(f"bnviz: starting the app from {script}\nbnviz: runs are read from {runs_text}", file=stream)
    return _exec(cmd, env)


# ----- runs -----------------------------------------------------------------------------------------
def runs_root(given: str | None) -> Path:
    """The folder ``bnviz runs`` lists: ``given``, else $BNVIZ_RUNS_DIR, else ./runs (as the app)."""
    return Path(given or os.environ.get(RUNS_ENV) or "runs").expanduser()


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def runs_table(runs: Sequence[Any]) -> list[str]:
    """:func:`bnviz.store.list_runs`'s summaries as text: a table, then what is wrong with each
    damaged run. A rank column appears when some run is one process of a distributed job."""
    ranked = any(r.world_size > 1 for r in runs)
    header = ["name", "status", "last step", "layers", "updated"] + (["rank"] if ranked else [])
    rows = []
    for r in runs:
        row = [r.name, r.status, _cell(r.last_step), _cell(r.layers if r.error is None else None), _when(r.updated)]
        if ranked:
            row.append(f"{r.rank} of {r.world_size}" if r.world_size > 1 else "-")
        rows.append(row)
    lines = _table(header, rows)
    damaged = [r for r in runs if r.error]
    if damaged:
        lines += ["", *(f"{r.name}: {r.error}" for r in damaged)]
    return lines


def run_runs(args: argparse.Namespace, stream: TextIO, out: TextIO) -> int:
    """``bnviz runs``: one line per run under the folder; a damaged run is listed with its error
    (still exit status 0: the listing worked)."""
    root = runs_root(args.dir)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root}: not a folder; give the folder that holds the runs (`bnviz doctor {root}` "
                         "reads one run file)")
    if not root.is_dir():
        hint = "" if args.dir else f" (runs are looked for in ${RUNS_ENV}, else ./runs; or give the folder)"
        raise UsageError(f"{root}: no such folder{hint}")
    from . import store

    runs = store.list_runs(root)
    if not runs:
        print(f"no runs in {root}", file=out)
        return EXIT_OK
    print("\n".join(runs_table(runs)), file=out)
    damaged = sum(1 for r in runs if r.error)
    print(f"\n{len(runs)} run(s) in {root}" + (f", {damaged} damaged" if damaged else ""), file=out)
    return EXIT_OK


# ----- doctor ---------------------------------------------------------------------------------------
SEVERITIES = ("problem", "warning", "ok")
FINDING_FIELDS = ("check", "layer", "severity", "title", "evidence", "fix")
REPORT_WIDTH = 100


def _finding(f: Any) -> dict[str, Any]:
    """A finding's text fields (its plotted series stay out of the report and the JSON)."""
    return {name: getattr(f, name) for name in FINDING_FIELDS}


def _wrapped(label: str, text: str) -> list[str]:
    return textwrap.wrap(f"{label}{text}", width=REPORT_WIDTH, initial_indent=" " * 9,
                         subsequent_indent=" " * (9 + len(label)), break_on_hyphens=False)


def doctor_report(heading: str, findings: Sequence[Mapping[str, Any]]) -> list[str]:
    """The text report: each problem and warning with its evidence and fix, then one line per
    check that passed, naming the layers it passed on, then the counts."""
    counts = {s: sum(f["severity"] == s for f in findings) for s in SEVERITIES}
    lines = [heading]
    ordered = sorted(findings, key=lambda f: SEVERITIES.index(f["severity"]) if f["severity"] in SEVERITIES else 0)
    for f in ordered:
        if f["severity"] == "ok":
            continue
        where = f" [layer {f['layer']}]" if f["layer"] else ""
        lines += ["", f"{str(f['severity']).upper():8} {f['title']}{where}"]
        if f["evidence"]:
            lines += _wrapped("evidence: ", f["evidence"])
        if f["fix"]:
            lines += _wrapped("fix: ", f["fix"])
    passed: dict[str, list[str]] = {}
    for f in ordered:
        if f["severity"] == "ok":
            passed.setdefault(f["title"], []).extend([f["layer"]] if f["layer"] else [])
    if passed:
        lines.append("")
        for title, layers in passed.items():
            where = f" (layer{'s' if len(layers) > 1 else ''} {', '.join(layers)})" if layers else ""
            lines += textwrap.wrap(f"{'ok':8} {title}: not found{where}", width=REPORT_WIDTH,
                                   subsequent_indent=" " * 9)
    if not findings:
        lines += ["", "nothing to check: the run records no normalization layer"]
    lines += ["", f"{counts['problem']} problem(s), {counts['warning']} warning(s), {counts['ok']} check(s) passed"]
    return lines


def run_doctor(args: argparse.Namespace, stream: TextIO, out: TextIO) -> int:
    """``bnviz doctor``: diagnose one recorded run; exit 1 if any finding is a problem. A missing,
    foreign or damaged run file is a usage error (2), one line naming the file."""
    from . import doctor, store

    run_dir = Path(args.run_dir).expanduser()
    try:
        run = store.open_run(run_dir)
        meta = run.meta
        findings = [_finding(f) for f in doctor.diagnose(run)]
    except (store.RunFileError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename or run_dir}: {exc.strerror or exc}") from None
    counts = {s: sum(f["severity"] == s for f in findings) for s in SEVERITIES}
    if args.json:
        json.dump({"run": str(run.path), "file": str(run.file), "status": meta.get("status"),
                   "last_step": meta.get("last_step"), "findings": findings, "counts": counts}, out, indent=2)
        out.write("\n")
    else:
        norm_layers = len(run.norm_layers)
        heading = (f"bnviz doctor: {run.path} ({meta.get('status')}, last step {_cell(meta.get('last_step'))}, "
                   f"{norm_layers} normalization layer{'' if norm_layers == 1 else 's'})")
        print("\n".join(doctor_report(heading, findings)), file=out)
    return EXIT_PROBLEM if counts["problem"] else EXIT_OK


# ----- the command line -----------------------------------------------------------------------------
def version() -> str:
    """bnviz's version: ``bnviz.__version__``, which pyproject.toml reads too."""
    from . import __version__

    return __version__


class _ExportHelp(argparse.Action):
    """``export --help`` lists the pages: the views (and torch) are imported only when it is asked for."""

    page_action: argparse.Action | None = None   # set by parser(): the --page option

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from .views import registry

        if self.page_action is not None:
            self.page_action.help = f"one page: {', '.join(registry())} (default: all of them)"
        parser.print_help()
        parser.exit()


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def parser(prog: str = "bnviz") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="bnviz: BatchNorm, visualized. Start the app, export its "
                                "figures, list and diagnose recorded runs.")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    a = sub.add_parser("app", help="start the web app (streamlit run) on 127.0.0.1",
                       usage=f"{prog} app [-h] [--runs DIR] [--port N] [--address A] [-- STREAMLIT-OPTIONS ...]",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Start the app with `python -m streamlit run` in this Python, bound to 127.0.0.1\n"
                                   "unless --address says otherwise. Its other server settings come from the app's\n"
                                   ".streamlit/config.toml. Options after `--` are passed to `streamlit run`.",
                       epilog=f"example: {prog} app --runs ~/bn-runs --port 8502 -- --server.fileWatcherType auto")
    a.add_argument("--runs", metavar="DIR", help=f"folder of recorded runs for the \"Your runs\" page (sets "
                                                 f"{RUNS_ENV}; default: ${RUNS_ENV} or ./runs)")
    a.add_argument("--port", type=_port, metavar="N", help="port to serve on (default: Streamlit's, 8501)")
    a.add_argument("--address", default="127.0.0.1", metavar="A",
                   help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 exposes the app to "
                        "your network: anyone who reaches it can make the server train networks)")
    a.add_argument("streamlit_args", nargs="*", help=argparse.SUPPRESS)

    parts = EXPORT_DOC.replace("::", ":").split("\n\n")
    e = sub.add_parser("export", help="write every figure of a page (or of all pages) as PNG and CSV",
                       description="\n\n".join(parts[:-1]), epilog=parts[-1], add_help=False,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    help_action = e.add_argument("-h", "--help", action=_ExportHelp, help="show this help message and exit")
    e.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    help_action.page_action = e.add_argument("--page", help="one page, e.g. figure1 (default: all of them; "
                                                            "--help lists them)")
    e.add_argument("--config", help="a link to the app (its query string holds the settings) or a JSON file "
                                    "of Config fields, applied on top of each page's defaults")
    e.add_argument("--no-png", action="store_true", help="write only the CSV files (no Chromium needed)")
    e.add_argument("--format", nargs="+", choices=("png", "svg", "pdf"), default=["png"], metavar="FMT",
                   help="image formats to write: png, svg, pdf, one or more (default: png)")
    e.add_argument("--presentation", action="store_true",
                   help="larger fonts and thicker lines, for a projector (as the app's Presentation setting)")
    e.add_argument("--animate", action="store_true",
                   help="also write the pages' animations (Activation histograms over training) as GIF, and MP4 "
                        "when imageio-ffmpeg is installed")

    r = sub.add_parser("runs", help="list the recorded runs in a folder",
                       description="List the runs under DIR: name, status, last step, layers, last update. "
                                   "A damaged run is listed with what is wrong with it.")
    r.add_argument("dir", nargs="?", metavar="DIR", help=f"folder of runs (default: ${RUNS_ENV} or ./runs)")

    d = sub.add_parser("doctor", help="diagnose one recorded run: what looks wrong, the evidence, the fix",
                       description="Run the checks of bnviz.doctor on one recorded run and print what they "
                                   "found. Exit status 1 if any finding is a problem, 0 otherwise, 2 when "
                                   "the run is missing or damaged.")
    d.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder (or its bnviz-run.sqlite); a distributed "
                                                      "job's folder means its rank-0 run")
    d.add_argument("--json", action="store_true", help="print the findings as JSON")
    return p


def main(argv: Sequence[str] | None = None, stream: TextIO | None = None, prog: str = "bnviz",
         out: TextIO | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``). Messages and progress go to
    ``stream`` (stderr), a command's results (``runs``, ``doctor``) to ``out`` (stdout). Returns
    the exit status; argparse exits with 2 itself on a malformed command line."""
    stream = sys.stderr if stream is None else stream
    out = sys.stdout if out is None else out
    p = parser(prog)
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help(stream)
        return EXIT_USAGE
    try:
        if args.command == "export":
            return run_export(args, stream)
        if args.command == "app":
            return run_app(args, stream)
        if args.command == "runs":
            return run_runs(args, stream, out)
        return run_doctor(args, stream, out)
    except UsageError as exc:
        print(f"error: {exc}", file=stream)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=stream)
        return EXIT_INTERRUPTED
