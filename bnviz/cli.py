"""``python -m bnviz export``: regenerate the app's figures as PNG and CSV files, without a browser session.

For slides and papers: every page's figures at their default display settings, from the page's
default configuration or one given as a shared link (its query string) or a JSON file::

    python -m bnviz export --out figs                       # every page
    python -m bnviz export --out figs --page why --config "http://localhost:8501/Why_BN_helps?steps=500"
    python -m bnviz export --out figs --page figure1 --config my-run.json --no-png

Files go to ``OUT/<page>/<figure>.png`` and ``.csv`` (the CSV holds every trace's data, tidy).
PNGs are rendered by one headless Chromium shared by all figures (:mod:`bnviz.export`).

Exit status: 0 when everything asked for was written; 1 when the CSVs were written but PNG export
was unavailable or failed (the message says how to install Chromium; a script that asked for PNGs
must not mistake a partial export for success, and ``--no-png`` asks for CSVs only); 2 for a
usage error (unknown page, unreadable or invalid configuration, missing data files, an output
folder that cannot be created), reported before anything is trained or written; 1 as well when a
file cannot be written midway; 130 when interrupted.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
import urllib.parse
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

import plotly.graph_objects as go
import torch

from . import export
from .config import Config, ConfigError, from_query, problems
from .data import DataFormatError, DataNotFoundError, load
from .figures.common import WIDTH
from .record import History
from .train import train
from .views import View, registry

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
FIELDS = tuple(f.name for f in fields(Config))


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
def export_pages(views: Sequence[View], configs: Mapping[str, Config], out: Path, png: bool,
                 progress: Progress) -> tuple[list[Path], str | None]:
    """Train, draw and write every view's figures. Returns the files written and, if some PNGs
    could not be made, why."""
    written: list[Path] = []
    png_problem: str | None = None
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
        folder = out / view.slug
        folder.mkdir(parents=True, exist_ok=True)
        # Named as in the page's "Download all (ZIP)": the same helper disambiguates equal stems.
        stems = export._unique([export.safe_filename(name) for name in figures], "{}-{}")
        for (name, fig), stem in zip(figures.items(), stems):
            progress.update(f"writing {stem}")
            csv_path = folder / f"{stem}.csv"
            csv_path.write_text(export.figure_csv(fig), encoding="utf-8")
            written.append(csv_path)
            if png and png_problem is None:
                try:
                    data = export.figure_png(fig, width=WIDTH)
                except export.ExportUnavailable as exc:
                    png_problem = str(exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - a render failure must not lose the other files
                    png_problem = f"rendering {stem}.png failed ({type(exc).__name__}: {str(exc)[:200]})"
                    continue
                png_path = folder / f"{stem}.png"
                png_path.write_bytes(data)
                written.append(png_path)
    return written, png_problem


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bnviz", description="bnviz command-line tools.")
    sub = p.add_subparsers(dest="command", required=True)
    parts = (__doc__ or "").replace("::", ":").split("\n\n")
    e = sub.add_parser("export", help="write every figure of a page (or of all pages) as PNG and CSV",
                       description="\n\n".join(parts[1:-1]), epilog=parts[-1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    e.add_argument("--page", help=f"one page: {', '.join(registry())} (default: all of them)")
    e.add_argument("--config", help="a link to the app (its query string holds the settings) or a JSON file "
                                    "of Config fields, applied on top of each page's defaults")
    e.add_argument("--no-png", action="store_true", help="write only the CSV files (no Chromium needed)")
    return p


def main(argv: Sequence[str] | None = None, stream: TextIO = sys.stderr) -> int:
    args = parser().parse_args(argv)
    # One intra-op thread, as the app uses: the exported numbers are the ones the page shows.
    torch.set_num_threads(1)
    started = time.monotonic()
    try:
        views = registry()
        if args.page is not None and args.page not in views:
            raise UsageError(f"unknown page {args.page!r}; valid pages: {', '.join(views)}")
        chosen = [views[args.page]] if args.page else list(views.values())
        settings = read_settings(args.config) if args.config else {}
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
        written, png_problem = export_pages(chosen, configs, args.out, not args.no_png, progress)
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
    pngs = sum(p.suffix == ".png" for p in written)
    print(f"wrote {len(written)} files ({pngs} PNG, {len(written) - pngs} CSV) to {args.out} "
          f"in {time.monotonic() - started:.1f} s", file=stream)
    if png_problem:
        print(f"PNG images are missing: {png_problem}", file=stream)
        if export.CHROMIUM_HELP not in png_problem:
            print(export.CHROMIUM_HELP, file=stream)
        return EXIT_PARTIAL
    return EXIT_OK
