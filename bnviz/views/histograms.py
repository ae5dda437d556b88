"""Activation histograms: every layer's distribution with and without BN, over training.

Two runs of the same network (same seed, data and batches), one with BatchNorm and one without;
each figure reads the histograms, percentiles and moments recorded at a tap point of a block.
"""
from __future__ import annotations

from typing import Mapping

import plotly.graph_objects as go

from ..animate import HistogramAnimation, histogram_animation
from ..config import Config
from ..figures import activations as figs
from ..figures import training_curves
from ..record import TAP_LABELS
from ..record import IOFFE_PERCENTILES, TENSORBOARD_PERCENTILES, History
from ..train import Run
from . import View
from .memo import training_only

DEFAULT = Config()
# The taps a user picks from, in the order a value meets them.
TAPS = ("pre_activation", "norm_output", "post_activation")
BANDS = {"ioffe": IOFFE_PERCENTILES, "tensorboard": TENSORBOARD_PERCENTILES}
BAND_LABELS = {"ioffe": "15/50/85th (Ioffe & Szegedy, Fig. 1)", "tensorboard": "0/7/16/31/50/69/84/93/100th (TensorBoard)"}
WITH, WITHOUT = "with BN", "without BN"


def runs(config: Config) -> dict[str, Config]:
    """The config as asked (BatchNorm unless it names another norm) and the same without a norm;
    with placement "none" (no normalization) only the latter."""
    if config.placement == "none":
        return {WITHOUT: config.without_norm()}
    with_norm = config if config.has_norm else config.replace(norm="batchnorm")
    label = WITH if with_norm.norm in ("batchnorm", "reference") else f"with {with_norm.norm}"
    return {label: with_norm, WITHOUT: config.without_norm()}


def recorded_steps(trained: Mapping[str, Run]) -> list[int]:
    """The steps the step control offers: those of the run recorded longest (a diverged or stopped
    run holds a prefix of them; its figures show its last snapshot)."""
    return max((list(r.history.snapshots.steps) for r in trained.values()), key=len)


def absent_note(trained: Mapping[str, Run], tap: str) -> str | None:
    """What to tell the user when a run has nothing at ``tap`` (e.g. BN output without BN)."""
    absent = figs.runs_without({k: r.history for k, r in trained.items()}, tap)
    if not absent:
        return None
    return (f"{' and '.join(absent)} has no {TAP_LABELS[tap]}: there is no normalization layer in that network, "
            "so its panels stay empty. Pick the pre- or post-activation tap to compare both runs.")


def histories(trained: Mapping[str, Run]) -> dict[str, History]:
    return {label: run.history for label, run in trained.items()}


def default_layer(trained: Mapping[str, Run]) -> int:
    """The last hidden layer: the one Ioffe & Szegedy's Figure 1 shows."""
    return len(next(iter(trained.values())).history.layer_names) - 1


# One builder per figure, so a page redraws only the figure whose settings changed; each reads
# training-mode records only, so a momentum change does not build it again (views.memo).
@training_only
def layer_histograms(trained: Mapping[str, Run], *, step: int | None = None, tap: str = "pre_activation",
                     log_y: bool = False) -> go.Figure:
    step = recorded_steps(trained)[-1] if step is None else step
    return figs.layer_histograms(histories(trained), step, tap, log_y=log_y)


@training_only
def percentile_bands(trained: Mapping[str, Run], *, layer: int | None = None, tap: str = "pre_activation",
                     bands: str = "ioffe", unit: bool = False) -> go.Figure:
    layer = default_layer(trained) if layer is None else layer
    return figs.percentile_bands(histories(trained), layer, tap, unit=unit, bands=BANDS[bands])


@training_only
def histogram_heatmap(trained: Mapping[str, Run], *, layer: int | None = None, tap: str = "pre_activation",
                      log_color: bool = True) -> go.Figure:
    layer = default_layer(trained) if layer is None else layer
    return figs.histogram_heatmap(histories(trained), layer, tap, log_color=log_color)


MAX_FRAMES = figs.MAX_FRAMES


@training_only
def played_histograms(trained: Mapping[str, Run], *, tap: str = "pre_activation") -> go.Figure:
    """The layer histograms at every recorded step, with a Play button and a step slider."""
    return figs.animated_layer_histograms(histories(trained), tap)


def make_figures(config: Config, trained: Mapping[str, Run], *, layer: int | None = None, step: int | None = None,
                 tap: str = "pre_activation", log_y: bool = False, bands: str = "ioffe", unit: bool = False,
                 log_color: bool = True) -> dict[str, go.Figure]:
    """The page's figures; the defaults (last hidden layer, last step) are what the export writes."""
    return {
        "layer histograms": layer_histograms(trained, step=step, tap=tap, log_y=log_y),
        "percentile bands": percentile_bands(trained, layer=layer, tap=tap, bands=bands, unit=unit),
        "histograms over training": histogram_heatmap(trained, layer=layer, tap=tap, log_color=log_color),
    }


def live_figures(partial: Mapping[str, History]) -> list[go.Figure]:
    """What the page shows while its networks train, redrawn at every progress report: the loss
    curves, every layer's histogram at the newest step all runs have recorded, and the last
    layer's percentile bands so far (the page's default tap and bands)."""
    out = [training_curves(partial)]
    recorded = {label: h for label, h in partial.items() if len(h.snapshots)}
    if recorded:
        step = min(h.snapshots.steps[-1] for h in recorded.values())
        out.append(figs.layer_histograms(recorded, step, "pre_activation"))
        layer = len(next(iter(recorded.values())).layer_names) - 1
        out.append(figs.percentile_bands(recorded, layer, "pre_activation", unit=False, bands=BANDS["ioffe"]))
    return out


ANIMATION = "layer histograms over training"


def animation(trained: Mapping[str, Run], *, tap: str = "pre_activation") -> HistogramAnimation:
    """The layer histograms at every recorded step: the page's GIF/MP4 downloads."""
    return histogram_animation(histories(trained), tap)


def animations(config: Config, trained: Mapping[str, Run]) -> dict[str, HistogramAnimation]:
    """What ``bnviz export --animate`` writes for this page (at the default tap)."""
    return {ANIMATION: animation(trained)}


VIEW = View(slug="histograms", title="Activation histograms", default=DEFAULT, runs=runs, figures=make_figures)
