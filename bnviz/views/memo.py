"""Figures of what training did, built once per training whatever the BN momentum.

Momentum never enters a training-mode forward pass (see :mod:`bnviz.batch_trace`): a run derived
for another momentum has the very same weights, losses and recorded activations as the run it
was derived from. A figure drawn from those alone is the same figure, so moving a page's momentum
slider need not build it again (on the histograms page that was ~70 ms of plotly of a ~150 ms
rerun). Only figures that read nothing momentum changes may use :func:`training_only`: running
statistics and eval-mode numbers do change.
"""
from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable, Mapping

from ..train import momentum_free

CAPACITY = 64          # figures kept, across sessions: a few pages' worth of display settings


def _training(run: Any) -> Hashable:
    """What a run's recorded training depends on: its config but the momentum, and how far it got
    (a stopped run's partial record is not the finished one's)."""
    history = run.history
    steps = history.snapshots.steps
    return (momentum_free(run.config), len(steps), steps[-1] if steps else None,
            history.stopped_at, history.diverged_at)


def training_only(build: Callable[..., Any]) -> Callable[..., Any]:
    """Cache ``build(trained, **settings)`` by the trainings of ``trained`` (label -> Run) and the
    settings. The figure returned is shared: callers must not change it (``ui.Page.chart`` and the
    exports copy a figure before restyling it)."""
    cache: OrderedDict[Hashable, Any] = OrderedDict()
    lock = threading.Lock()

    @functools.wraps(build)
    def cached(trained: Mapping[str, Any], **settings: Any) -> Any:
        try:
            key = (tuple((label, _training(run)) for label, run in trained.items()), tuple(sorted(settings.items())))
            hash(key)
        except (AttributeError, TypeError):      # not runs of a Config, or settings that cannot be a key
            return build(trained, **settings)
        with lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        figure = build(trained, **settings)
        with lock:
            cache[key] = figure
            while len(cache) > CAPACITY:
                cache.popitem(last=False)
        return figure

    cached.cache_clear = cache.clear          # type: ignore[attr-defined]
    return cached
