"""Comparisons over seeds for the views whose experiments train outside ``Page.train`` (small-batch
remedies, gradient accumulation, weight decay): each seed's final accuracies, reduced to
:mod:`bnviz.seeds`' headline numbers (mean ± half the 95 % t-interval) and paired verdicts.

Seed k gives every arm of a comparison the same data split, batches and (where shapes agree)
initial weights, so the verdicts are paired by seed as ``Page.train``'s are.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from .. import seeds

# Runs a page trains at most over all its seeds; past it, fewer seeds (the page says so).
MAX_SEED_RUNS = 60


def seed_list(first: int, wanted: int, runs_per_seed: int) -> tuple[list[int], str | None]:
    """The seeds a page trains (``first``, ``first + 1``, ...) when each costs ``runs_per_seed``
    runs: ``wanted`` of them, or fewer past :data:`MAX_SEED_RUNS` runs, with a note saying so."""
    n = max(1, min(wanted, MAX_SEED_RUNS // max(runs_per_seed, 1)))
    note = None
    if n < wanted:
        note = (f"This page trains {runs_per_seed} networks per seed; at most {MAX_SEED_RUNS} runs are trained, "
                f"so {n} seed(s) instead of {wanted}.")
    return [first + k for k in range(n)], note


def summarize(values: Mapping[str, Sequence[float]], seed_list: Sequence[int],
              pairs: Sequence[tuple[str, str]]) -> seeds.SeedSummary:
    """``values[label][k]``: final test accuracy (0..1) of ``label`` at ``seed_list[k]``."""
    verdicts = [seeds.verdict(a, b, seeds.paired_difference(values[a], values[b]).scaled(100.0)) for a, b in pairs]
    headlines = {k: seeds.headline(v, bounds=seeds.ACCURACY) for k, v in values.items()}
    return seeds.SeedSummary(seeds=tuple(seed_list), headlines=headlines,
                             intervals={k: seeds.mean_interval(v).scaled(100.0) for k, v in values.items()},
                             verdicts=verdicts)


def markdown(summary: seeds.SeedSummary) -> str:
    """The summary as the page shows it: the headline per run, a verdict per pair, the method."""
    lines = [f"**{summary.title}**", ""]
    lines += [f"- final test accuracy, {label}: **{text}**" for label, text in summary.headlines.items()]
    lines += [f"- {line}" for line in summary.verdicts]
    lines += ["", summary.caption + f" The charts show seed {summary.seeds[0]} (the sidebar's seed)."]
    return "\n".join(lines)
