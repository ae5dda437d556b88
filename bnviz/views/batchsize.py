"""Train vs eval mode, and batch size: one input across batches, a batch of one, and a sweep of
BatchNorm / GroupNorm / LayerNorm / no norm over batch sizes (the shape of Wu & He 2018, Figure 1).

The page's own network is a BN network trained at the sidebar's batch size; the sweep trains the
same network (same seed, steps, learning rate, width) once per (normalization, batch size).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..experiments import sweeps
from ..config import Config, problems
from ..figures import batchsize as figs
from ..figures.common import color
from ..figures.seeds import add_band
from ..seeds import ACCURACY, band, final_test_accuracy
from ..train import Run, train
from . import View

DEFAULT = Config(norm="batchnorm", steps=300, width=64, batch_size=32, lr=0.05, eval_every=100)
MAIN = "BN network (part 1)"
IN_BATCH_SIZES = (2, 4, 8, 16, 32, 64)
N_BATCHES = 100
EXAMPLES = 3            # inputs shown in the batch-of-one figure
VIEW_DEFAULTS = {"sample": 0, "in_batch": 8, "sizes": ",".join(map(str, sweeps.DEFAULT_BATCH_SIZES)),
                 "bn": True, "gn": True, "ln": True, "none": True}
NORM_TOGGLES = {"bn": "batchnorm", "gn": "groupnorm", "ln": "layernorm", "none": "none"}


def main_config(config: Config) -> Config:
    """The page's BN network: the sweep's BN run at the sidebar's batch size (shared with it)."""
    return sweeps.sweep_config(config, "batchnorm", config.batch_size)


def runs(config: Config, batch_sizes: Sequence[int] = sweeps.DEFAULT_BATCH_SIZES,
         norms: Sequence[str] = sweeps.SWEEP_NORMS) -> dict[str, Config]:
    """The main BN network (if its batch size can train) followed by every sweep run."""
    out: dict[str, Config] = {}
    if not problems(main_config(config)):
        out[MAIN] = main_config(config)
    out.update(sweeps.sweep_configs(config, batch_sizes, norms)[0])
    return out


def comparisons(batch_sizes: Sequence[int], norms: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs a verdict over seeds is given for: at each batch size, BatchNorm against every
    other normalization of the sweep (the question of Wu & He's Figure 1)."""
    if "batchnorm" not in norms:
        return []
    return [(sweeps.sweep_label("batchnorm", b), sweeps.sweep_label(n, b)) for b in batch_sizes for n in norms
            if n != "batchnorm"]


def sweep_figure(sweep: sweeps.Sweep, configs: Mapping[str, Config],
                 over_seeds: Mapping[str, Sequence[Run]] | None = None) -> go.Figure:
    """Accuracy against batch size (the page's seed); over several seeds (``over_seeds[label]``,
    one run per seed) each normalization's eval-mode line becomes the mean and 95 % band over the
    seeds at each batch size (the dotted batch-statistics lines stay the page's seed's)."""
    fig = figs.sweep_accuracy(sweep)
    n = min((len(over_seeds.get(label, ())) for label in configs), default=0) if over_seeds else 0
    if n < 2:
        return fig
    norms = list(dict.fromkeys(cfg.norm for cfg in configs.values()))
    names = {sweeps.NORM_LABELS.get(norm, norm): norm for norm in norms}
    fig.data = [t for t in fig.data if t.name not in names]
    for name, norm in names.items():
        labels = [label for label, cfg in configs.items() if cfg.norm == norm]
        sizes = np.array([configs[label].batch_size for label in labels])
        curves = [(sizes, np.array([final_test_accuracy(over_seeds[label][k].history) for label in labels]))
                  for k in range(n)]
        add_band(fig, band(curves, bounds=ACCURACY), name=name, c=figs.NORM_COLORS.get(norm, color(4)))
    return fig


def batch_dependence_all(run: Run, index: int, sizes: Sequence[int] = IN_BATCH_SIZES,
                         seed: int = 0) -> list[sweeps.BatchDependence]:
    """The test input ``index`` in random test batches of every size in ``sizes`` (train-mode BN)."""
    data = run.dataset
    return [sweeps.batch_dependence(run.model, data.x_test, data.y_test, index, b, N_BATCHES, seed)
            for b in sizes if b <= len(data.x_test)]


def batch_of_one(run: Run, index: int) -> go.Figure:
    """Eval mode vs a train-mode batch of one, for ``EXAMPLES`` test inputs starting at ``index``."""
    data = run.dataset
    idx = [(index + k * 37) % len(data.x_test) for k in range(EXAMPLES)]
    eval_probs = sweeps.eval_probabilities(run.model, data.x_test[idx])
    one = sweeps.batch_of_one_probabilities(run.model, data.x_test[idx])
    return figs.batch_of_one(eval_probs, one, [int(data.y_test[i]) for i in idx], idx)


def make_figures(config: Config, trained: Mapping[str, Run]) -> dict[str, go.Figure]:
    """Every figure at the default display settings; trains what ``trained`` lacks."""
    trained = dict(trained)
    for label, cfg in runs(config).items():
        if label not in trained:
            trained[label] = train(cfg)
    out: dict[str, go.Figure] = {}
    main = trained.get(MAIN)
    if main is not None and main.model is not None:
        deps = batch_dependence_all(main, VIEW_DEFAULTS["sample"])
        chosen = next((d for d in deps if d.batch_size == VIEW_DEFAULTS["in_batch"]), deps[0])
        out["one input across batches"] = figs.batch_dependence(chosen)
        out["train vs eval by batch size"] = figs.batch_dependence_by_size(deps)
        out["batch of one"] = batch_of_one(main, VIEW_DEFAULTS["sample"])
    configs, _ = sweeps.sweep_configs(config)
    sweep = sweeps.summarize(trained, configs)
    out["batch size sweep"] = figs.sweep_accuracy(sweep)
    out["batch mean noise"] = figs.sweep_noise(sweep)
    return out


VIEW = View(slug="batchsize", title="Train vs eval, and batch size", default=DEFAULT, runs=runs, figures=make_figures)
