"""``python -m benchmarks``: run every benchmark group, print the table, write latest.json.

Options: ``--quick`` (tiny repeat counts and short runs: checks the code, measures nothing),
``--only training,norms`` (some groups), ``--out PATH`` (default benchmarks/latest.json).
A full run with the default output also refreshes the results table in benchmarks/README.md and README.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import sys
import time
import traceback
from pathlib import Path

import torch

from . import Result, loadavg, machine

GROUPS = ("norms", "training", "watch", "export", "views", "browser", "parallel")
HERE = Path(__file__).resolve().parent
# Both carry the results table between the markers: benchmarks/README.md and the project's README.
READMES = (HERE / "README.md", HERE.parent / "README.md")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _fmt(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit == "ms":
        return f"{v:.0f}"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def _verdict(r: Result) -> str:
    return "" if r.met is None else ("met" if r.met else "MISSED")


def table(results: list[Result]) -> str:
    rows = [("key", "value", "median", "min", "max", "n", "unit", "target", "")]
    for r in results:
        j = r.as_json()
        rows.append((r.key, _fmt(r.value, r.unit), _fmt(j["median"], r.unit), _fmt(j["min"], r.unit),
                     _fmt(j["max"], r.unit), str(j["n"]), r.unit,
                     r.bound, _verdict(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def markdown(results: list[Result], info: dict, reruns: list[dict] = ()) -> str:
    m = info["machine"]
    lines = [f"Measured {info['started'][:10]} on {m['cpu']} ({m['cores_available']} cores available, "
             f"torch {m['torch']}, Python {m['python']}, {m['torch_threads']} torch thread; load average "
             f"{m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} at end)."
             + (" The machine was shared (load above its core count): absolute times are inflated "
                "accordingly; the ratios are of CPU time, taken side by side." if
                max(m["loadavg_start"][0], m["loadavg_end"][0]) > (m["cores_available"] or 1) else ""), "",
             *(f"Re-measured {r['started'][:16].replace('T', ' ')} (load {r['machine']['loadavg_start'][0]:.1f} at "
               f"start, {r['machine']['loadavg_end'][0]:.1f} at end): {', '.join(f'`{k}`' for k in r['keys'])}."
               for r in reruns if r.get("keys")),
             "", "| key | median | min | max | target | | what |", "|---|---:|---:|---:|---:|---|---|"]
    for r in results:
        j = r.as_json()
        lines.append(f"| `{r.key}` | {_fmt(r.value, r.unit)} {r.unit} | {_fmt(j['min'], r.unit)} | "
                     f"{_fmt(j['max'], r.unit)} | {'' if r.target is None else f'{r.bound} {r.unit}'} | "
                     f"{_verdict(r)} | {r.what} |")
    return "\n".join(lines)


def _update_readme(text: str) -> None:
    for readme in READMES:
        if not readme.exists():
            continue
        doc = readme.read_text()
        if BEGIN in doc and END in doc:
            head, rest = doc.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny repeat counts: check the code runs")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of {', '.join(GROUPS)}")
    parser.add_argument("--out", type=Path, default=HERE / "latest.json")
    parser.add_argument("--rerun", action="store_true",
                        help="measure --only's groups again and merge them into latest.json (their keys replaced, the "
                             "run listed under 'reruns'), then refresh the README tables")
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s): {', '.join(sorted(unknown))}")

    # One intra-op thread, as the app runs each session (bnviz/ui.py) and as the tests do.
    torch.set_num_threads(1)
    info = {"started": dt.datetime.now().isoformat(timespec="seconds"), "quick": args.quick, "groups": groups,
            "machine": {**machine(), "loadavg_start": loadavg()}}
    started = time.perf_counter()
    results: list[Result] = []
    errors: dict[str, str] = {}
    for group in groups:
        t = time.perf_counter()
        print(f"[{group}] ...", file=sys.stderr, flush=True)
        try:
            results += importlib.import_module(f"{__package__}.{group}").run(args.quick)
        except Exception as exc:  # noqa: BLE001 - one broken group must not lose the others' numbers
            results += getattr(exc, "results", [])  # what the group measured before its failing part
            errors[group] = traceback.format_exc()
            print(errors[group], file=sys.stderr)
        print(f"[{group}] {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    info["machine"]["loadavg_end"] = loadavg()
    info["duration_s"] = round(time.perf_counter() - started, 1)

    if args.rerun:
        out = json.loads(args.out.read_text())
        for r in results:
            out[r.key] = r.value
            out["detail"][r.key] = r.as_json()
        out.setdefault("reruns", []).append({**info, "keys": [r.key for r in results], "errors": errors})
    else:
        out = {r.key: r.value for r in results}
        out.update(info)
        out["errors"] = errors
        out["detail"] = {r.key: r.as_json() for r in results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")

    print(table(results))
    print(f"\nmachine: {info['machine']['cpu']}, {info['machine']['cores_available']} cores, torch "
          f"{info['machine']['torch']}, load {info['machine']['loadavg_start'][0]:.1f} -> "
          f"{info['machine']['loadavg_end'][0]:.1f}; {info['duration_s']} s; wrote {args.out}")
    if errors:
        print(f"FAILED groups: {', '.join(errors)} (tracebacks above and in {args.out.name})")
    if not args.quick and args.out == HERE / "latest.json" and not errors:
        if args.rerun:
            _update_readme(markdown([Result.from_json(k, j) for k, j in out["detail"].items()], out,
                                    reruns=out["reruns"]))
        elif set(groups) == set(GROUPS):
            _update_readme(markdown(results, info))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
