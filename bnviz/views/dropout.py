"""Dropout and BN: the variance shift dropout causes at BN, per layer and against the keep probability,
three orderings of dropout and BN, and the fix of recomputing BN statistics with dropout off
(Li, Chen, Hu & Yang, CVPR 2019)."""
from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

from ..experiments import variance_shift as vs
from ..config import DROPOUT_POSITIONS, Config, parse_list, parse_number
from ..figures import dropout as figs
from ..train import EVAL_SUBSET, Run, train
from . import View

DEFAULT = Config(norm="batchnorm", dropout=0.5, dropout_position="before_norm", steps=500, width=64, depth=3,
                 batch_size=32, lr=0.05, eval_every=100, record_every=50)
DEFAULT_KEEPS = (0.5, 0.6, 0.7, 0.8, 0.9)
KEEP_RANGE = (0.1, 1.0)
MAX_KEEPS = 9
SWEEP_POSITIONS = ("before_norm", "after_activation")
VIEW_DEFAULTS = {"keeps": ",".join(f"{k:g}" for k in DEFAULT_KEEPS), "sweep_position": "before_norm",
                 "units": "before_norm"}


def ordering_label(config: Config, position: str) -> str:
    """The block as a reader writes it, e.g. ``Linear-dropout-BN-ReLU``."""
    act = {"relu": "ReLU", "sigmoid": "sigmoid", "tanh": "tanh"}[config.activation]
    parts = ["BN", act] if config.placement == "before" else [act, "BN"]
    if position == "before_output":
        return "Linear-" + "-".join(parts) + ", dropout before classifier"
    if position == "before_norm":
        parts.insert(parts.index("BN"), "dropout")
    else:
        parts.insert(parts.index(act) + 1, "dropout")
    return "Linear-" + "-".join(parts)


NEEDS_NORM = ("This page measures what dropout does to the BatchNorm after it: with placement \"no "
              "normalization\" there is no BN to disturb. Choose BN before or after the activation.")


def ordering_configs(config: Config) -> dict[str, Config]:
    return {ordering_label(config, pos): config.replace(dropout_position=pos) for pos in DROPOUT_POSITIONS}


def comparisons(config: Config) -> list[tuple[str, str]]:
    """The pairs a verdict over seeds is given for: the three orderings against each other."""
    labels = list(ordering_configs(config))
    return [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]


def keep_config(config: Config, keep: float, position: str) -> Config:
    return config.replace(dropout=round(1.0 - keep, 6), dropout_position=position)


def keep_label(keep: float) -> str:
    return f"keep p = {keep:g}"


def runs(config: Config, keeps: Sequence[float] = DEFAULT_KEEPS, position: str = "before_norm") -> dict[str, Config]:
    """The three orderings at the page's dropout, then one run per keep probability (each config once)."""
    out = ordering_configs(config)
    seen = set(out.values())
    for k in keeps:
        cfg = keep_config(config, k, position)
        if cfg not in seen:
            out[keep_label(k)] = cfg
            seen.add(cfg)
    return out


def find(trained: Mapping[str, Run], config: Config) -> Run | None:
    """The trained run of ``config`` whatever its label (a keep run may share an ordering's config)."""
    return next((r for r in trained.values() if r.config == config), None)


def analyse(run: Run) -> tuple[list[vs.LayerShift], vs.StatisticsFix]:
    """Variance shift per BN layer and the statistics fix, for one finished run."""
    data = run.dataset
    x = data.x_train[:EVAL_SUBSET]
    return (vs.measure_variance_shift(run.model, x, seed=run.config.seed),
            vs.recomputed_statistics_accuracy(run.model, x, data.x_test, data.y_test))


def first_shifted(layers: Sequence[vs.LayerShift]) -> vs.LayerShift:
    """The first BN layer that dropout feeds with a closed form (else the first BN layer)."""
    return next((s for s in layers if s.theory_ratio is not None and s.mean_theory != 1.0), layers[0])


def parse_keeps(text: str) -> tuple[list[float], list[str]]:
    """Keep probabilities from a comma-separated URL value; bad items dropped with a note. Never raises."""
    lo, hi = KEEP_RANGE

    def keep(item: str) -> float:
        value = parse_number(item)
        if not lo <= value <= hi:
            raise ValueError(f"{item[:20]} is outside [{lo:g}, {hi:g}] (a keep probability)")
        return round(value, 2)

    keeps, notes = parse_list(text, keep, limit=MAX_KEEPS, what="keep probabilities (one training run each)")
    return sorted(keeps), notes


def make_figures(config: Config, trained: Mapping[str, Run]) -> dict[str, go.Figure]:
    """Every figure at the default display settings; trains what ``trained`` lacks."""
    trained = dict(trained)
    for label, cfg in runs(config).items():
        if find(trained, cfg) is None:
            trained[label] = train(cfg)
    orderings = {label: analyse(find(trained, cfg)) for label, cfg in ordering_configs(config).items()}
    keeps = [analyse(find(trained, keep_config(config, k, "before_norm")))[0] for k in DEFAULT_KEEPS]
    units_label = ordering_label(config, VIEW_DEFAULTS["units"])
    return {
        "variance ratio by layer": figs.ratio_by_layer({k: v[0] for k, v in orderings.items()}),
        "variance ratio vs keep probability": figs.ratio_vs_keep(DEFAULT_KEEPS, keeps),
        "variance ratio per unit": figs.unit_scatter(first_shifted(orderings[units_label][0])),
        "recomputed statistics": figs.accuracy_fix({k: v[1] for k, v in orderings.items()}),
    }


VIEW = View(slug="dropout", title="Dropout and BN", default=DEFAULT, runs=runs, figures=make_figures)
