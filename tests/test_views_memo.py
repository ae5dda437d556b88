"""Figures of training-mode records are built once per training: a run derived for another BN
momentum gets the very figure of its source, which a fresh build from it equals; another training
(seed, a stopped run's shorter record) gets its own. Oracle: the builder called without the cache."""
import dataclasses

import plotly.io as pio
import pytest

from bnviz.train import train, with_momentum
from bnviz.views import histograms

BUILDERS = [(histograms.layer_histograms, {"tap": "post_activation"}),
            (histograms.percentile_bands, {"layer": 1, "bands": "tensorboard"}),
            (histograms.histogram_heatmap, {"layer": 0}),
            (histograms.played_histograms, {})]


@pytest.fixture(scope="module")
def trained():
    from bnviz.config import Config
    config = Config(steps=60, width=32, depth=2, record_every=10, eval_every=20)
    return {label: train(cfg, trace=True) for label, cfg in histograms.runs(config).items()}


@pytest.mark.parametrize("build,settings", BUILDERS, ids=lambda b: getattr(b, "__name__", ""))
def test_a_momentum_change_reuses_the_figure_and_it_is_what_a_fresh_build_draws(trained, build, settings):
    derived = {label: with_momentum(run, 0.5) for label, run in trained.items()}
    assert all(d is not None for d in derived.values())
    # the derived run really differs where momentum matters
    assert derived["with BN"].history.evals.items[-1] != trained["with BN"].history.evals.items[-1]
    first = build(trained, **settings)
    assert build(derived, **settings) is first
    fresh = build.__wrapped__(derived, **settings)
    assert pio.to_json(fresh) == pio.to_json(first)


def test_another_training_or_a_shorter_record_gets_its_own_figure(trained):
    first = histograms.layer_histograms(trained)
    reseeded = {label: train(run.config.replace(seed=1)) for label, run in trained.items()}
    assert histograms.layer_histograms(reseeded) is not first
    assert pio.to_json(histograms.layer_histograms(reseeded)) != pio.to_json(first)
    # a stopped run: the same config, a record cut after its third snapshot
    cut = {}
    for label, run in trained.items():
        snaps = dataclasses.replace(run.history.snapshots, steps=run.history.snapshots.steps[:3],
                                    items=run.history.snapshots.items[:3])
        cut[label] = dataclasses.replace(run, history=dataclasses.replace(run.history, snapshots=snaps,
                                                                          stopped_at=25))
    assert histograms.layer_histograms(cut) is not first
    assert pio.to_json(histograms.layer_histograms(cut)) == pio.to_json(histograms.layer_histograms.__wrapped__(cut))


def test_settings_change_the_figure(trained):
    assert histograms.layer_histograms(trained, log_y=True) is not histograms.layer_histograms(trained, log_y=False)
