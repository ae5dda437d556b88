"""Why BN helps: larger stable learning rates, a smoother loss landscape, and noisy BN still training.

Three experiments, none of which is a plain :func:`bnviz.train.train` run, so ``runs`` is empty
and :func:`make_figures` computes them (the page calls the same functions one by one, cached and
with progress):

* :func:`sweep_points`: :mod:`bnviz.experiments.lr_sweep` over :data:`bnviz.experiments.lr_sweep.DEFAULT_LRS`;
* :func:`landscape_runs`: :mod:`bnviz.experiments.landscape`, the network with and without BN, probed at
  15 steps;
* :func:`noisy_run`: :mod:`bnviz.experiments.noisy_bn`; the figure's BN and no-BN curves are those of the landscape
  runs (the probes never change a run, and the loops are identical), so only the noisy network
  trains again.

Over several seeds (the page's Seeds control) every network of the three experiments trains at each
seed (:func:`sweep_jobs`, :func:`landscape_jobs`, :func:`noisy_jobs`, seed by seed); seed k gives
the networks compared the same batches (and the same initial weights where their shapes agree), so
their comparisons are paired by seed (:mod:`bnviz.seeds`). :func:`make_figures` (the export) draws
the page's own seed.

The default network is deeper than the home page's (6 hidden layers) and starts from weights twice
PyTorch's default scale (close to He initialization, x2.45): Santurkar et al. study deep networks
(VGG, 25-layer linear nets) with such initializations, and the effects are small on a shallow one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..experiments import landscape, lr_sweep, noisy_bn
from ..config import Config
from ..figures import seeds as seed_figs
from ..figures.common import color
from ..figures import why as figs
from ..seeds import ACCURACY, Interval, band, headline, mean_interval, paired_difference, verdict, within_run_budget
from ..train import Curves
from ..train import Run
from . import View
from .settings import snap

DEFAULT = Config(depth=6, init_scale=2.0, steps=300, lr=0.05, eval_every=25)
N_STEP_SIZES = 8
# Networks trained per seed: the sweep's two at every rate, the two probed ones, the noisy one.
NETWORKS_PER_SEED = 2 * len(lr_sweep.DEFAULT_LRS) + 3
# The landscape metrics: Probe property -> what the page calls it.
LANDSCAPE_METRICS = {"loss_range": "loss range (a)", "max_grad_diff": "gradient change (b)",
                     "beta": "effective beta (c)"}

# (done, total, text) -- how every experiment here reports progress.
Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Settings:
    """The page's experiment controls (not Config fields), kept in the URL."""

    step_max: float = 4.0       # largest probe step, in multiples of the learning rate
    noise_shift: float = 1.0    # noisy BN: per-unit shift drawn from U(-shift, shift)
    noise_scale: float = 2.0    # noisy BN: per-unit factor drawn from U(1, scale)

    @property
    def step_multiples(self) -> tuple[float, ...]:
        """``N_STEP_SIZES`` evenly spaced multiples of lr up to ``step_max`` (0.4 gives 0.05 ... 0.4)."""
        return tuple(float(m) for m in np.linspace(self.step_max / N_STEP_SIZES, self.step_max, N_STEP_SIZES))


OPTIONS: dict[str, tuple[float, ...]] = {
    "step_max": (0.4, 1.0, 2.0, 4.0, 8.0),
    "noise_shift": (0.0, 0.25, 0.5, 1.0, 2.0, 3.0),
    "noise_scale": (1.0, 1.25, 1.5, 2.0, 3.0, 5.0),
}


def coerce(name: str, raw: Any) -> tuple[float, str | None]:
    """An experiment setting from the URL or a widget, snapped to what the control offers (with a
    note for the page to show); never raises."""
    return snap(name, raw, getattr(Settings(), name), OPTIONS[name])


def runs(config: Config) -> dict[str, Config]:
    return {}


def variants(config: Config) -> dict[str, Config]:
    """The network with BatchNorm and the same network without."""
    return {"with BN": config.replace(norm="batchnorm"), "without BN": config.without_norm()}


def seeds_within(n_seeds: int, max_runs: int) -> int:
    """The seeds the page trains at: ``n_seeds``, cut (as :meth:`bnviz.ui.Page.train` cuts them) so
    that its :data:`NETWORKS_PER_SEED` networks times the seeds stay within ``max_runs``."""
    return within_run_budget(n_seeds, NETWORKS_PER_SEED, max_runs)


def seed_configs(config: Config, n_seeds: int) -> list[Config]:
    """``config`` at its own seed and the ``n_seeds - 1`` following ones (the first is ``config``)."""
    return [config.replace(seed=config.seed + k) for k in range(max(1, n_seeds))]


def sweep_points(config: Config, progress: Report | None = None) -> list[lr_sweep.SweepPoint]:
    return lr_sweep.sweep(config.replace(norm="batchnorm"), progress=progress)


def landscape_runs(config: Config, step_max: float,
                   progress: Report | None = None) -> dict[str, landscape.LandscapeRun]:
    multiples = Settings(step_max=step_max).step_multiples
    out = {}
    jobs = variants(config)
    for i, (label, cfg) in enumerate(jobs.items()):
        def report(done: int, total: int, i=i, label=label) -> None:
            if progress is not None:
                progress(i * total + done, len(jobs) * total, f"{label}: step {done}/{total}")
        out[label] = landscape.train_with_probes(cfg, step_multiples=multiples, progress=report)
    return out


def noisy_run(config: Config, noise_shift: float, noise_scale: float, progress: Report | None = None) -> Curves:
    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total, f"noisy BN: step {done}/{total}")
    noise = noisy_bn.Noise(shift=noise_shift, scale=noise_scale)
    return noisy_bn.train_noisy(config.replace(norm="batchnorm"), noise, progress=report)


def noisy_curves(probed: Mapping[str, landscape.LandscapeRun], noisy: Curves, settings: Settings) -> dict[str, Curves]:
    return {"BN": probed["with BN"].curves,
            f"noisy BN (shift ±{settings.noise_shift:g}, scale 1-{settings.noise_scale:g})": noisy,
            "no BN": probed["without BN"].curves}


def sweep_figure(config: Config, points: list[lr_sweep.SweepPoint],
                 over_seeds: Sequence[Sequence[lr_sweep.SweepPoint]] = ()) -> go.Figure:
    """The sweep of the page's seed; over several seeds (``over_seeds[k]``: seed k's points) the
    lines become the mean and 95 % band over the seeds at each rate (a diverged run left out)."""
    fig = figs.lr_sweep(points, config.steps)
    if len(over_seeds) < 2:
        return fig
    labels = list(dict.fromkeys(p.label for p in points))
    fig.data = [t for t in fig.data if t.name not in labels]
    for i, label in enumerate(labels):
        for col, field in ((1, "final_loss"), (2, "test_acc")):
            curves = [(np.array([p.lr for p in pts if p.label == label]),
                       np.array([getattr(p, field) if p.diverged_at is None else np.nan for p in pts if p.label == label]))
                      for pts in over_seeds]
            seed_figs.add_band(fig, band(curves, bounds=ACCURACY if field == "test_acc" else None), name=label,
                               c=color(i), row=1, col=col,
                               showlegend=col == 1, mode="lines+markers")
    return fig


def sweep_jobs(config: Config, n_seeds: int = 1) -> list[tuple[str, Config]]:
    """(label, config) of every run of the sweep at ``n_seeds`` seeds, seed by seed (the page's first)."""
    jobs = lr_sweep.jobs(config.replace(norm="batchnorm"))
    return [(label, cfg.replace(seed=cfg.seed + k)) for k in range(max(1, n_seeds)) for label, cfg in jobs]


def by_seed(points: Sequence[lr_sweep.SweepPoint], n_seeds: int) -> list[list[lr_sweep.SweepPoint]]:
    """The points of :func:`sweep_jobs` cut into one list per seed."""
    size = len(points) // max(1, n_seeds)
    return [list(points[k * size:(k + 1) * size]) for k in range(max(1, n_seeds))]


def sweep_verdicts(over_seeds: Sequence[Sequence[lr_sweep.SweepPoint]]) -> list[str]:
    """At each learning rate, BN against no BN on final test accuracy, paired by seed."""
    out = []
    for lr in dict.fromkeys(p.lr for p in over_seeds[0]):
        acc = {label: [next((p.test_acc for p in pts if p.label == label and p.lr == lr), np.nan) for pts in over_seeds]
               for label in ("with BN", "without BN")}
        diff = paired_difference(acc["with BN"], acc["without BN"]).scaled(100.0)
        out.append(f"learning rate {lr:g}: " + verdict("with BN", "without BN", diff))
    return out


def largest_stable_over_seeds(over_seeds: Sequence[Sequence[lr_sweep.SweepPoint]], label: str) -> str:
    """The largest stable rate of each seed summarized: the median, and the range when seeds differ
    (a rate on a grid: a mean ± interval of it would name rates that were never tried)."""
    best = [lr_sweep.largest_stable(pts, label) for pts in over_seeds]
    found = sorted(b for b in best if b is not None)
    if not found:
        return "none"
    text = f"{float(np.median(found)):g}"
    if found[0] != found[-1]:
        text += f" (median; {found[0]:g} to {found[-1]:g})"
    missing = len(best) - len(found)
    return text + (f", none in {missing} of {len(best)} seeds" if missing else "")


def landscape_jobs(config: Config, step_max: float, n_seeds: int = 1) -> list[tuple[Config, float]]:
    """Arguments of :func:`landscape_run` for both :func:`variants` at ``n_seeds`` seeds, seed by seed."""
    return [(cfg, step_max) for seeded in seed_configs(config, n_seeds) for cfg in variants(seeded).values()]


def noisy_jobs(config: Config, noise_shift: float, noise_scale: float,
               n_seeds: int = 1) -> list[tuple[Config, float, float]]:
    """Arguments of :func:`noisy_job` at ``n_seeds`` seeds, seed by seed."""
    return [(seeded, noise_shift, noise_scale) for seeded in seed_configs(config, n_seeds)]


def by_label(results: Sequence[Any], labels: Sequence[str]) -> dict[str, list[Any]]:
    """Results of jobs listed seed by seed, one per label at each seed (:func:`landscape_jobs`), as
    ``{label: [result of seed 0, seed 1, ...]}``."""
    k = len(labels)
    return {label: list(results[i::k]) for i, label in enumerate(labels)}


def landscape_medians(over_seeds: Mapping[str, Sequence[landscape.LandscapeRun]], name: str) -> dict[str, list[float]]:
    """Each seed's median over the probed steps of the Probe property ``name``, per label."""
    return {label: [float(np.nanmedian(run.series(name)[1])) if run.probes else np.nan for run in runs]
            for label, runs in over_seeds.items()}


def mean_pm(values: Sequence[float]) -> str:
    """Mean ± half the 95 % t-interval, three significant digits ("0.412 ± 0.031"); the one value for one."""
    iv = mean_interval(values)
    if iv.n == 0:
        return "n/a"
    if iv.n < 2:
        return f"{iv.mean:.3g}"
    return f"{iv.mean:.3g} ± {iv.half_width:.2g}"


def landscape_summary(over_seeds: Mapping[str, Sequence[landscape.LandscapeRun]]
                      ) -> dict[str, tuple[dict[str, str], Interval, str]]:
    """Per landscape metric: each label's mean ± interval of the per-seed medians, the paired
    difference with BN minus without BN, and its verdict line."""
    out = {}
    for name, what in LANDSCAPE_METRICS.items():
        med = landscape_medians(over_seeds, name)
        diff = paired_difference(med["with BN"], med["without BN"])
        out[name] = ({label: mean_pm(v) for label, v in med.items()}, diff,
                     f"median {what}: " + verdict("with BN", "without BN", diff, unit="", lower_is_better=True,
                                                  number="{:.3g}"))
    return out


def final_accuracy(curves: Curves) -> float:
    """Eval-mode test accuracy at the end; NaN for a run that diverged (left out over seeds)."""
    return float(curves.test_acc[-1]) if curves.diverged_at is None and len(curves.test_acc) else np.nan


def noisy_curves_over_seeds(over_seeds: Mapping[str, Sequence[landscape.LandscapeRun]], noisy: Sequence[Curves],
                            settings: Settings) -> dict[str, list[Curves]]:
    """:func:`noisy_curves` at every seed: ``{label: [curves of seed 0, seed 1, ...]}``."""
    per_seed = [noisy_curves({label: runs[k] for label, runs in over_seeds.items()}, cur, settings)
                for k, cur in enumerate(noisy)]
    return {label: [c[label] for c in per_seed] for label in per_seed[0]}


def noisy_summary(curves: Mapping[str, Sequence[Curves]]) -> tuple[dict[str, str], list[str]]:
    """Final test accuracy over seeds ("97.6 % ± 0.5") per label, and the paired verdicts of noisy BN
    against BN and against no BN (in percentage points)."""
    acc = {label: [final_accuracy(c) for c in cs] for label, cs in curves.items()}
    bn, noisy, plain = list(acc)  # noisy_curves' order
    verdicts = [verdict("noisy BN", other, paired_difference(acc[noisy], acc[label]).scaled(100.0))
                for other, label in (("BN", bn), ("no BN", plain))]
    return {label: headline(v, bounds=ACCURACY) for label, v in acc.items()}, verdicts


def landscape_run(config: Config, step_max: float, report: object = None) -> landscape.LandscapeRun:
    """One network of :func:`landscape_runs`, for the executor."""
    return landscape.train_with_probes(config, step_multiples=Settings(step_max=step_max).step_multiples)


def noisy_job(config: Config, noise_shift: float, noise_scale: float, report: object = None) -> Curves:
    """:func:`noisy_run` for the executor."""
    return noisy_run(config, noise_shift, noise_scale)


def landscape_figure(probed: Mapping[str, landscape.LandscapeRun],
                     over_seeds: Mapping[str, Sequence[landscape.LandscapeRun]] | None = None) -> go.Figure:
    """The page's seed's runs; over several seeds (``over_seeds[label][k]``: seed k's run) the three
    quantities the metrics summarize, as the mean and 95 % band over seeds at each probed step."""
    if over_seeds and min(len(runs) for runs in over_seeds.values()) >= 2:
        return figs.landscape_over_seeds(over_seeds)
    return figs.landscape(probed)


def noisy_figure(curves: Mapping[str, Curves], over_seeds: Mapping[str, Sequence[Curves]] | None = None) -> go.Figure:
    """The page's seed's curves; over several seeds the mean and 95 % band over seeds at each step."""
    if over_seeds and min(len(cs) for cs in over_seeds.values()) >= 2:
        return figs.noisy_training_over_seeds(over_seeds)
    return figs.noisy_training(curves)


def make_figures(config: Config, trained: Mapping[str, Run], settings: Settings = Settings(),
                 progress: Report | None = None) -> dict[str, go.Figure]:
    """All three experiments at ``settings``; ``progress`` gets (done, total, text) per experiment."""
    def part(name: str) -> Report | None:
        if progress is None:
            return None
        return lambda done, total, text: progress(done, total, f"{name}: {text}")

    points = sweep_points(config, part("learning-rate sweep"))
    probed = landscape_runs(config, settings.step_max, part("loss landscape"))
    noisy = noisy_run(config, settings.noise_shift, settings.noise_scale, part("noisy BN"))
    return {
        "learning-rate sweep": sweep_figure(config, points),
        "loss landscape": landscape_figure(probed),
        "noisy BN": noisy_figure(noisy_curves(probed, noisy, settings)),
    }


VIEW = View(slug="why", title="Why BN helps", default=DEFAULT, runs=runs, figures=make_figures)
