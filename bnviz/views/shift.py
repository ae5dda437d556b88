"""Precise BN and covariate shift: re-estimating BN statistics after training (precise BN, for several
momenta and numbers of batches), on a shifted test domain (AdaBN), and fine-tuning with BN frozen or
trainable."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
import torch

from ..experiments import adapt
from ..config import SHIFTS, Config, parse_number
from ..data import shift_features
from ..figures import shift as figs
from ..train import EVAL_SUBSET, Run, train
from . import View

DEFAULT = Config(norm="batchnorm", steps=300, width=64, batch_size=16, lr=0.05, momentum=0.1, eval_every=100,
                 record_every=50)
DEFAULT_MOMENTA: tuple[float | None, ...] = (0.001, 0.01, 0.1, 0.9)
MAX_MOMENTA = 6
N_OPTIONS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_NS = (1, 2, 4, 8, 16, 32, 64)
REPEATS = 3
KINDS = tuple(k for k in SHIFTS if k != "none")
AMOUNTS = tuple(round(0.25 * i, 2) for i in range(13))       # 0 .. 3, the curve's grid
AMOUNT_RANGE = (0.0, 3.0)


@dataclass(frozen=True)
class TransferSettings:
    """The fine-tuning experiment: all of it is a view control, none of it retrains the source network."""

    kind: str = "offset"
    amount: float = 1.0
    n_labelled: int = 100
    steps: int = 100
    lr: float = 0.01


TRANSFER = TransferSettings()
LABELLED_OPTIONS = (10, 20, 50, 100, 200, 500)
FINETUNE_STEPS = (0, 20, 50, 100, 200, 500)
FINETUNE_LRS = (0.001, 0.003, 0.01, 0.03, 0.05, 0.1)
VIEW_DEFAULTS: dict[str, Any] = {
    "momenta": ",".join(f"{m:g}" for m in DEFAULT_MOMENTA), "ns": ",".join(map(str, DEFAULT_NS)),
    "kind": TRANSFER.kind, "amount": TRANSFER.amount, "labelled": TRANSFER.n_labelled,
    "ft_steps": TRANSFER.steps, "ft_lr": TRANSFER.lr,
}


def momentum_label(m: float | None) -> str:
    return "momentum None (cumulative)" if m is None else f"momentum {m:g}"


def runs(config: Config, momenta: Sequence[float | None] = DEFAULT_MOMENTA) -> dict[str, Config]:
    """One run per momentum, the page's own momentum first (it is also the source network)."""
    out = {momentum_label(config.momentum): config}
    for m in momenta:
        out.setdefault(momentum_label(m), config.replace(momentum=m))
    return out


def _same_weights(a: Run, b: Run) -> bool:
    pa, pb = list(a.model.parameters()), list(b.model.parameters())
    return len(pa) == len(pb) and all(torch.equal(x, y) for x, y in zip(pa, pb))


def precise_curves(trained: Mapping[str, Run], labels: Sequence[str], ns: Sequence[int],
                   batch_size: int) -> dict[str, adapt.PreciseCurve]:
    """Precise BN over ``ns`` batches of ``batch_size`` for each finished run in ``labels``.

    Runs that differ only in momentum have identical weights (running statistics never feed back
    into training), so precise BN, which only reads the weights, is computed once for them.
    """
    out: dict[str, adapt.PreciseCurve] = {}
    done: list[tuple[Run, adapt.PreciseCurve]] = []
    for label in labels:
        run = trained.get(label)
        if run is None or run.model is None:
            continue
        d = run.dataset
        twin = next((c for r, c in done if r.config.replace(momentum=None) == run.config.replace(momentum=None)
                     and _same_weights(r, run)), None)
        if twin is None:
            curve = adapt.precise_bn_curve(run.model, d.x_train, d.x_test, d.y_test, batch_size, ns, REPEATS,
                                           seed=run.config.seed)
            done.append((run, curve))
        else:
            curve = dataclasses.replace(twin, ema=adapt.score(run.model, d.x_test, d.y_test))
        out[label] = curve
    return out


def shift_results(run: Run, settings: TransferSettings) -> tuple[adapt.ShiftCurve, adapt.FirstLayerStats | None,
                                                                  adapt.Transfer]:
    d = run.dataset
    x_target = shift_features(d.x_test, settings.kind, settings.amount)
    curve = adapt.shift_curve(run.model, d.x_test, d.y_test, settings.kind, AMOUNTS)
    result = adapt.transfer(run.model, d.x_train, d.y_train, d.x_test, d.y_test, settings.kind, settings.amount,
                            n_labelled=settings.n_labelled, steps=settings.steps,
                            batch_size=min(run.config.batch_size, settings.n_labelled), lr=settings.lr,
                            seed=run.config.seed)
    return curve, adapt.first_layer_stats(run.model, x_target[:EVAL_SUBSET]), result


def parse_momentum(item: str) -> float | None:
    if item.lower() in ("none", "cumulative"):
        return None
    value = parse_number(item, "momentum")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"momentum {item[:20]!r} is not in (0, 1] (PyTorch convention: the weight of the new batch)")
    return value


def parse_n(item: str) -> int:
    value = parse_number(item, "N")
    if value not in N_OPTIONS:
        raise ValueError(f"N {item[:20]!r} is not one of {', '.join(map(str, N_OPTIONS))}")
    return int(value)


def coerce_float(name: str, raw: Any, low: float, high: float) -> tuple[float, str | None]:
    """A float view value from the URL or a widget, clamped to [low, high]; never raises."""
    default = float(VIEW_DEFAULTS[name])
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return default, f"{name} {str(raw)[:20]!r} is not a number; using {default:g}"
    if not math.isfinite(value):
        return default, f"{name} {str(raw)[:20]} is not a finite number; using {default:g}"
    if not low <= value <= high:
        fixed = min(max(value, low), high)
        return fixed, f"{name} {str(raw)[:20]} is outside [{low:g}, {high:g}]; using {fixed:g}"
    return value, None


def make_figures(config: Config, trained: Mapping[str, Run]) -> dict[str, go.Figure]:
    """Every figure at the default display settings; trains what ``trained`` lacks."""
    trained = dict(trained)
    for label, cfg in runs(config).items():
        if label not in trained:
            trained[label] = train(cfg)
    labels = list(runs(config))
    curves = precise_curves(trained, labels, DEFAULT_NS, config.batch_size)
    curve, stats, result = shift_results(trained[momentum_label(config.momentum)], TRANSFER)
    out = {"precise BN": figs.precise_bn(curves), "covariate shift": figs.shift_curve(curve, TRANSFER.amount)}
    if stats is not None:
        out["first BN layer statistics"] = figs.first_layer(stats)
    out["transfer"] = figs.transfer(result)
    return out


VIEW = View(slug="shift", title="Precise BN and domain shift", default=DEFAULT, runs=runs, figures=make_figures)
