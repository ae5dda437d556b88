"""Batch dependence of one input, batch of one, and the batch-size sweep, against independent oracles."""
import math

import numpy as np
import pytest
import torch

from bnviz.experiments import sweeps
from bnviz.config import Config
from bnviz.record import NormStats, Snapshot, Thinned
from bnviz.train import Run, train
from test_adapt import numpy_forward  # the hand-written numpy MLP oracle

CONFIG = Config(steps=120, width=32, depth=2, batch_size=16, record_every=1000, eval_every=1000)


@pytest.fixture(scope="module")
def run():
    return train(CONFIG)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_eval_mode_ignores_the_batch_train_mode_does_not(run):
    d = run.dataset
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    dep = sweeps.batch_dependence(run.model, d.x_test, d.y_test, 5, 4, n_batches=30, seed=2)
    assert all(torch.equal(before[k], v) for k, v in run.model.state_dict().items())
    assert dep.eval_in_batch_max_diff < 1e-4
    assert dep.train_probs.shape == (30, 10)
    np.testing.assert_allclose(dep.train_probs.sum(1), 1.0, atol=1e-5)
    assert np.ptp(dep.train_probs[:, dep.eval_class]) > 1e-3   # the batch changes the output
    bn = {i: m for i, m in run.model.batchnorms()}
    stats = [(bn[i].running_mean.double().numpy(), bn[i].running_var.double().numpy()) for i in sorted(bn)]
    np.testing.assert_allclose(dep.eval_probs, _softmax(numpy_forward(run.model, d.x_test[5:6], stats=stats))[0],
                               atol=1e-5)
    assert dep.label == int(d.y_test[5])
    assert 0.0 <= dep.flip_rate <= 1.0 and 0.0 <= dep.total_variation <= 1.0


def test_train_mode_output_in_a_batch_matches_numpy(run):
    """A batch holding the whole pool: BN statistics do not depend on the order, so the input's
    train-mode output is fixed and numpy computes it with the pool's batch statistics."""
    pool, labels = run.dataset.x_test[:12], run.dataset.y_test[:12]
    dep = sweeps.batch_dependence(run.model, pool, labels, 3, 12, n_batches=3)
    oracle = _softmax(numpy_forward(run.model, pool))[3]
    for row in dep.train_probs:
        np.testing.assert_allclose(row, oracle, atol=1e-5)
    assert dep.flip_rate in (0.0, 1.0)


def test_batch_of_one_gives_every_input_the_same_output(run):
    x = run.dataset.x_test[:4]
    probs = sweeps.batch_of_one_probabilities(run.model, x)
    # x_hat = 0 in every BN layer: each outputs beta; numpy with BN replaced by beta.
    for block in run.model.blocks:  # the last block's beta is all the head sees
        h = np.maximum(block.norm.bias.detach().double().numpy()[None, :], 0.0)
    head = run.model.head[-1]
    logits = h @ head.weight.detach().double().numpy().T + head.bias.detach().double().numpy()
    for row in probs:
        np.testing.assert_allclose(row, _softmax(logits)[0], atol=1e-5)
    error = sweeps.batch_of_one_error(run.model, x[:1])
    assert "Expected more than 1 value per channel" in error
    assert sweeps.batch_of_one_error(train(CONFIG.replace(norm="groupnorm", steps=2)).model, x[:1]) is None


def test_sweep_configs_skip_batchnorm_at_batch_one_only():
    configs, notes = sweeps.sweep_configs(CONFIG, [1, 2], ["batchnorm", "groupnorm"])
    assert list(configs) == ["BatchNorm, batch 2", "GroupNorm, batch 1", "GroupNorm, batch 2"]
    assert len(notes) == 1 and "BatchNorm, batch 1" in notes[0] and "batch of one" in notes[0]
    assert configs["BatchNorm, batch 2"].record_every == sweeps.NOISE_RECORD_EVERY
    assert configs["GroupNorm, batch 2"].record_every == CONFIG.steps
    assert all(c.seed == CONFIG.seed and c.steps == CONFIG.steps and c.lr == CONFIG.lr for c in configs.values())


@pytest.mark.parametrize("text, sizes, n_notes", [
    ("2, 4,8", [2, 4, 8], 0), ("64,2,2", [2, 64], 0), ("3, x, 2.5, 1e9, 16", [16], 4), ("", [], 0)])
def test_parse_batch_sizes(text, sizes, n_notes):
    got, notes = sweeps.parse_batch_sizes(text)
    assert got == sizes and len(notes) == n_notes


def test_batch_mean_noise_follows_sigma_over_sqrt_n():
    """The BN layer's batch mean jitters from step to step by sigma / sqrt(n): the measured noise
    (successive differences over the recorded steps) against the closed form, at two batch sizes."""
    base = Config(steps=300, width=64, record_every=1000, eval_every=1000)
    noise = {}
    for n in (4, 32):
        r = train(sweeps.sweep_config(base, "batchnorm", n))
        noise[n] = sweeps.batch_mean_noise(r)
        assert noise[n].layer == 0 and len(noise[n].steps) >= 70
        assert 0.8 < noise[n].pooled_ratio < 1.25, (n, noise[n].pooled_ratio)
        # sigma: from the recorded (biased) batch variances, made unbiased
        np.testing.assert_allclose(noise[n].theory_std, noise[n].sigma / math.sqrt(n), rtol=1e-9)
    shrink = np.median(noise[4].relative_std) / np.median(noise[32].relative_std)
    assert shrink == pytest.approx(math.sqrt(32 / 4), rel=0.25)


def test_successive_difference_estimator_on_a_known_series():
    """Drifting mean + white noise of known std: the estimator recovers the noise, a plain std would not."""
    rng = np.random.default_rng(0)
    steps = np.arange(0, 400, 2)
    true = 0.5 + 0.01 * steps
    cfg = Config(steps=400, batch_size=8)
    snaps = Thinned(cap=1000, stride=2)
    for s, mu in zip(steps, true):
        m = (mu + 0.3 * rng.standard_normal(3)).astype(np.float32)
        v = np.full(3, 0.3 ** 2 * 8 * 7 / 8, dtype=np.float32)  # biased var whose unbiased value is 0.72
        snaps.add(int(s), Snapshot(step=int(s), taps={}, norms={0: NormStats(m, v, m, v, None, None)}))
    history = type("H", (), {"snapshots": snaps})()
    noise = sweeps.batch_mean_noise(Run(config=cfg, history=history, model=None, dataset=None))
    np.testing.assert_allclose(noise.measured_std, 0.3, rtol=0.2)
    np.testing.assert_allclose(noise.sigma, math.sqrt(0.3 ** 2 * 8), rtol=1e-5)


def test_summarize_reports_stopped_runs_as_missing(run):
    configs = {"a": CONFIG, "b": CONFIG.replace(seed=1)}
    stopped = train(CONFIG.replace(seed=1, steps=3))
    stopped.history.stopped_at = 2
    sweep = sweeps.summarize({"a": run, "b": stopped}, configs)
    assert sweep.missing == ("b",)
    assert sweep.accuracy(CONFIG.norm, CONFIG.batch_size) == run.history.evals[-1].test_acc
