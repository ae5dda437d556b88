"""The default run of every page view: what a visitor waits for on a page's first load (training
its runs with ``bnviz.train.train``, then drawing its figures), without Streamlit.

One run each (these are the slow numbers, and the ratios elsewhere carry the comparisons); in quick
mode only the home view, cut to 30 steps, which only checks that the code runs.
"""
from __future__ import annotations

import time

from bnviz.train import train
from bnviz.views import depth, registry, residual, transformer

from . import Result

# Views that draw a fast figure before they train: their key is the time to that first figure.
FIRST_FIGURE = {v.VIEW.slug: v.first_figure for v in (residual, depth, transformer)}


def view_runs(quick: bool) -> list[Result]:
    results = []
    views = registry()
    if quick:                    # one view is enough to check the code path
        views = {slug: view for slug, view in views.items() if slug == "home"}
    for slug, view in views.items():
        config = view.default.replace(steps=min(view.default.steps, 30)) if quick else view.default
        configs = view.runs(config)
        start = time.perf_counter()
        runs = {label: train(cfg) for label, cfg in configs.items()}
        trained = time.perf_counter() - start
        start = time.perf_counter()
        figures = view.figures(config, runs)
        drawn = time.perf_counter() - start
        if slug in FIRST_FIGURE:
            start = time.perf_counter()
            FIRST_FIGURE[slug](config)
            first = time.perf_counter() - start
            results.append(Result(
                f"view_{slug}_default_s", [first], "s", f"page view {slug!r}: its first figure at the default "
                f"settings (all {len(figures)} figures, trainings included: detail all_figures_s)", target=5.0,
                detail={"all_figures_s": round(trained + drawn, 3)}))
            continue
        # Views whose experiments are not plain runs (remedies, accumulation, a data-parallel job)
        # train inside their figures function: their time is all figures_s.
        what = (f"train its {len(configs)} default run(s) and build its {len(figures)} figure(s)" if configs else
                f"train its experiments and build its {len(figures)} figure(s), all in its figures function")
        results.append(Result(
            f"view_{slug}_default_s", [trained + drawn], "s", f"page view {slug!r}: {what}",
            detail={"train_s": round(trained, 3), "figures_s": round(drawn, 3),
                    "steps": {label: cfg.steps for label, cfg in configs.items()}}))
    return results


def run(quick: bool) -> list[Result]:
    return view_runs(quick)
