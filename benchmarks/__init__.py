"""Measured speed and memory of bnviz: the numbers behind the README's performance claims.

``python -m benchmarks`` (or ``make bench``) runs every group, prints a table and writes
``benchmarks/latest.json``. Each group is a module with a ``run(quick: bool) -> list[Result]``:

- ``training``: recorder overhead, the home page's default run against a bare torch loop, and the
  memory a 50,000-step History holds;
- ``norms``: the reference BatchNorm against ``torch.nn.BatchNorm1d``;
- ``watch``: ``bnviz.watch`` on a ResNet-18 against the same loop without it, and opening a
  50,000-step recorded run;
- ``export``: server-side PNG export with the persistent kaleido browser;
- ``views``: the default run of every page view (training and figures);
- ``browser``: time to the first chart of ``streamlit run app.py`` in headless Chromium, and the
  latency of a display-only redraw.
- ``parallel``: ten independent runs through ``bnviz.executor`` against one after another, and 32
  browser sessions at once on one server (time until all show results, peak memory).

Why ratios are measured side by side: these machines are shared, so absolute times move with the
load of the moment. A ratio takes its two sides in alternating order (A B B A ...) in one process,
so both see the same load, and the reported value is the median of the per-round ratios.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass
class Result:
    """One reported number: ``value`` is what latest.json holds under ``key``."""

    key: str
    samples: list[float]                  # one per repeat; value = their median unless given
    unit: str                             # "x" for ratios, "s", "ms", "MB"
    what: str                             # one-line definition, for the table and the README
    target: float | None = None           # the budget: value must be <= target (>= with at_least)
    value: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at_least: bool = False                # a speed-up: the target is a floor

    def __post_init__(self) -> None:
        if self.value is None:
            self.value = statistics.median(self.samples)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.at_least else self.value <= self.target

    @property
    def bound(self) -> str:
        """The target as the table prints it: "<= 1.05", ">= 1.8", or nothing."""
        return "" if self.target is None else f"{'>=' if self.at_least else '<='} {self.target:g}"

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "median": statistics.median(self.samples), "min": min(self.samples),
                "max": max(self.samples), "n": len(self.samples), "unit": self.unit, "target": self.target,
                "met": self.met, "at_least": self.at_least, "what": self.what, "samples": self.samples,
                **self.detail}

    @classmethod
    def from_json(cls, key: str, j: dict[str, Any]) -> "Result":
        """The Result latest.json holds under ``detail[key]`` (its detail left out)."""
        at_least = j.get("at_least")
        if at_least is None:   # written before at_least was: a met floor lies above its target
            at_least = j["target"] is not None and j["met"] == (j["value"] >= j["target"]) != (j["value"] <= j["target"])
        return cls(key, list(j["samples"]), j["unit"], j["what"], j["target"], j["value"], at_least=bool(at_least))


@dataclass
class Timings:
    """Per-variant samples of wall time and of this process's CPU time (both in seconds).

    CPU time is what a ratio is taken of: with one torch thread it counts the work done, while
    wall time also counts the time the scheduler gave other processes of a busy machine.
    """

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def interleaved(variants: Mapping[str, Callable[[], Any]], rounds: int) -> Timings:
    """Time each variant ``rounds`` times, alternating the order every round (A B, B A, ...) so
    a drift in machine load hits every variant alike."""
    names = list(variants)
    t = Timings({n: [] for n in names}, {n: [] for n in names})
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            wall, cpu = time.perf_counter(), time.process_time()
            variants[name]()
            t.cpu[name].append(time.process_time() - cpu)
            t.wall[name].append(time.perf_counter() - wall)
    return t


def ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    return [a / b for a, b in zip(numerator, denominator)]


def spread(samples: Sequence[float], scale: float = 1.0, digits: int = 4) -> dict[str, float]:
    return {"median": round(statistics.median(samples) * scale, digits),
            "min": round(min(samples) * scale, digits), "max": round(max(samples) * scale, digits)}


def loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return list(os.getloadavg())


def machine() -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil
        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        mem_gb = None
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": mem_gb,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
