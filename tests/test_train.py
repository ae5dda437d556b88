import numpy as np
import pytest
import torch

from bnviz.config import Config, ConfigError
from bnviz.train import evaluate, population_statistics, train


def _fingerprint(run):
    h = run.history
    snaps = [(s.step, {k: (v.counts.tolist(), v.percentiles.tolist()) for k, v in s.taps.items()}) for s in h.snapshots]
    return h.losses.steps, h.losses.items, [vars(e)["test_acc"] for e in h.evals], snaps


@pytest.mark.parametrize("extra", [{}, {"dropout": 0.3, "optimizer": "adam"}])
def test_same_config_gives_identical_history(tiny_config, extra):
    cfg = tiny_config.replace(**extra)
    assert _fingerprint(train(cfg)) == _fingerprint(train(cfg))
    assert _fingerprint(train(cfg)) != _fingerprint(train(cfg.replace(seed=1)))


def test_default_network_learns_digits_with_and_without_bn():
    for norm in ("batchnorm", "none"):
        run = train(Config(norm=norm, steps=400))
        assert run.history.finished
        assert run.history.evals[-1].test_acc > 0.85, norm


def test_recording_taps_every_layer_at_the_cadence(tiny_config):
    run = train(tiny_config)
    h = run.history
    assert h.snapshots.steps == [0, 10, 20, 30, 40, 50, 59]
    assert h.evals.steps == [0, 20, 40, 60]
    snap = h.snapshots[-1]
    assert {layer for layer, _ in snap.taps} == {0, 1}
    assert set(h.taps) == {"pre_activation", "norm_output", "post_activation", "output"}


def test_long_run_memory_is_bounded():
    short = train(Config(steps=200, record_every=1, eval_every=5, width=16, depth=1))
    long = train(Config(steps=5000, record_every=1, eval_every=5, width=16, depth=1))
    assert len(long.history.snapshots) <= 201
    assert long.history.snapshots.steps[-1] == 4999
    assert long.history.nbytes() < 1.5 * short.history.nbytes() + 200_000


def test_progress_callback_sees_each_evaluation_and_can_stop(tiny_config):
    seen = []

    def progress(done, total, history):
        seen.append((done, total, len(history.evals)))
        return done < 40

    run = train(tiny_config, progress)
    assert seen == [(0, 60, 1), (20, 60, 2), (40, 60, 3)]
    assert run.history.stopped_at == 40 and not run.history.finished


def test_progress_can_stop_before_the_first_update(tiny_config):
    run = train(tiny_config, lambda done, total, history: False)
    assert run.history.stopped_at == 0 and not run.history.finished
    assert len(run.history.losses) == 0 and len(run.history.snapshots) == 0
    assert list(run.history.evals.steps) == [0]


def test_divergence_is_reported_not_raised():
    run = train(Config(norm="none", lr=10.0, init_scale=10.0, steps=300, optimizer="sgd"))
    h = run.history
    assert h.diverged_at is not None and h.diverged_at < 300
    assert not h.finished


def test_batch_of_one_with_bn_is_refused_before_training():
    with pytest.raises(ConfigError, match="batch of one"):
        train(Config(batch_size=1, steps=5))


def test_evaluation_leaves_running_statistics_untouched(tiny_config):
    run = train(tiny_config)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    evaluate(run.model, run.dataset, tiny_config, 0)
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_population_statistics_of_first_layer_match_numpy(tiny_config):
    run = train(tiny_config)
    x = run.dataset.x_train[:500]
    stats = population_statistics(run.model, x)
    w = run.model.blocks[0].weight.weight.detach().numpy().astype(np.float64)
    z = x.numpy().astype(np.float64) @ w.T  # layer 1's BN input: Linear without bias
    np.testing.assert_allclose(stats[0][0].numpy(), z.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats[0][1].numpy(), z.var(0, ddof=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["batchnorm", "reference"])
def test_population_statistics_of_the_second_layer_follow_the_first_normalized_by_its_own(norm):
    run = train(Config(steps=60, width=16, depth=2, norm=norm, momentum=0.3))
    model, x = run.model, run.dataset.x_train[:300]
    momenta = [m.momentum for _, m in model.batchnorms()]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    stats = population_statistics(model, x)
    f64 = lambda t: t.detach().numpy().astype(np.float64)  # noqa: E731
    b1, b2 = model.blocks[0], model.blocks[1]
    z1 = x.numpy().astype(np.float64) @ f64(b1.weight.weight).T
    # BN in training mode normalizes by the batch's biased variance; the stored one is unbiased
    y1 = f64(b1.norm.weight) * (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + b1.norm.eps) + f64(b1.norm.bias)
    z2 = np.maximum(y1, 0) @ f64(b2.weight.weight).T
    np.testing.assert_allclose(stats[1][0].numpy(), z2.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats[1][1].numpy(), z2.var(0, ddof=1), rtol=1e-4, atol=1e-5)
    assert [m.momentum for _, m in model.batchnorms()] == momenta
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k
    assert not model.training


def test_eval_accuracy_with_population_stats_is_close_to_running_stats_after_training():
    run = train(Config(steps=600, bn_diagnostics=True))
    last = run.history.evals[-1]
    assert abs(last.test_acc_population - last.test_acc) < 0.05


def _per_batch_oracle(model, x, batch_size):
    """The definition, one batch at a time: a fresh copy of the model, BN layers in training mode
    (dropout off), the test set cut into batches of ``batch_size`` (a last batch of one joins the
    one before it)."""
    import copy

    net = copy.deepcopy(model)
    net.eval()
    for _, m in net.batchnorms():
        m.train()
    starts = list(range(0, len(x), batch_size))
    ends = starts[1:] + [len(x)]
    if len(starts) > 1 and ends[-1] - starts[-1] < 2:
        starts.pop()
        ends.pop(-2)
    with torch.no_grad():
        return torch.cat([net(x[a:b]) for a, b in zip(starts, ends)])


@pytest.mark.parametrize("extra, batch_size, n", [
    ({}, 64, 360),                                         # 5 full batches and one of 40
    ({"norm": "reference", "placement": "after"}, 16, 96),  # batches of one size only
    ({"dropout": 0.3, "dropout_position": "before_norm"}, 7, 50),  # a last batch of 1 joins the one before
    ({"arch": "cnn", "dataset": "digits-image"}, 32, 100),  # BatchNorm2d over channels and positions
    ({}, 512, 360),                                        # one batch smaller than batch_size
])
def test_accuracy_with_batch_statistics_normalizes_each_test_batch_by_itself(extra, batch_size, n):
    from bnviz.train import _batchnorm_per_chunk, _chunks, accuracy_with_batch_stats, batchnorm_train_mode

    run = train(Config(steps=40, width=24, depth=2, **extra))
    model, x, y = run.model, run.dataset.x_test[:n], run.dataset.y_test[:n]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    expected = _per_batch_oracle(model, x, batch_size)
    assert accuracy_with_batch_stats(model, x, y, batch_size) == (expected.argmax(1) == y).sum().item() / n
    # The logits themselves, from the pass that puts the full-size batches side by side.
    slices = _chunks(len(x), batch_size)
    size = slices[0].stop
    full = sum(sl.stop - sl.start == size for sl in slices) * size   # the batches of full size
    with torch.no_grad():
        batchnorm_train_mode(model)
        with _batchnorm_per_chunk(model, size):
            together = model(x[:full])
    model.eval()
    torch.testing.assert_close(together, expected[:full], rtol=1e-5, atol=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k
    assert not model.training


@pytest.mark.parametrize("norm", ["batchnorm", "groupnorm", "none"])
def test_evaluation_agrees_with_its_definitions(norm):
    from bnviz.train import EVAL_SUBSET, accuracy_with_stats

    config = Config(steps=50, width=24, depth=2, norm=norm, batch_size=48, bn_diagnostics=True)
    run = train(config)
    model, data = run.model, run.dataset
    point = evaluate(model, data, config, 50)
    with torch.no_grad():
        logits = model(data.x_test)
    assert point.test_acc == (logits.argmax(1) == data.y_test).float().mean().item()
    batch = _per_batch_oracle(model, data.x_test, config.batch_size)
    # (approx: float32 mean or count / n; one sample more or less would be 1 / 360)
    assert point.test_acc_batch_stats == pytest.approx((batch.argmax(1) == data.y_test).sum().item() / len(data.y_test), abs=1e-7)
    population = population_statistics(model, data.x_train[:EVAL_SUBSET])
    assert point.test_acc_population == accuracy_with_stats(model, data.x_test, data.y_test, population)
    assert point.population.keys() == population.keys() == ({0, 1} if norm == "batchnorm" else set())
    for i, (mean, var) in population.items():
        np.testing.assert_array_equal(point.population[i][0], mean.numpy())
        np.testing.assert_array_equal(point.population[i][1], var.numpy())


def test_without_bn_diagnostics_an_evaluation_is_only_the_eval_mode_test_pass():
    config = Config(steps=30, width=24, depth=2)
    assert not config.bn_diagnostics  # the default: most views show only the eval-mode curves
    run = train(config)
    with_them = evaluate(run.model, run.dataset, config.replace(bn_diagnostics=True), 30)
    for point in (run.history.evals[-1], evaluate(run.model, run.dataset, config, 30)):
        assert np.isnan(point.test_acc_batch_stats) and np.isnan(point.test_acc_population)
        assert point.population == {}
        assert (point.test_acc, point.test_loss) == (with_them.test_acc, with_them.test_loss)


def test_the_views_that_show_bn_diagnostics_ask_for_them():
    from bnviz.experiments.sweeps import sweep_config
    from bnviz.views import running

    assert all(c.bn_diagnostics for c in running.runs(running.DEFAULT).values())
    assert sweep_config(Config(), "batchnorm", 8).bn_diagnostics


def test_asking_the_thinned_series_only_at_the_next_due_step_misses_no_step():
    """The loop asks a series whether a step is due only at the step _next_due names: its stride
    only ever doubles, so every step it wants, asked at every step, is one of those."""
    from bnviz.record import Thinned
    from bnviz.train import _next_due
    for stride, cap, last in ((1, 8, 300), (3, 5, 1000), (20, 200, 999), (7, 400, 10)):
        series = Thinned(cap=cap, stride=stride)
        ask = _next_due(series, 0, last)
        for step in range(last + 1):
            wanted = series.due(step) or step == last
            assert step == ask or not wanted
            if step == ask:
                if wanted:
                    series.add(step, step)
                ask = _next_due(series, step + 1, last)


def test_thinned_snapshots_and_evaluations_are_those_of_a_series_asked_at_every_step():
    from bnviz.record import EVAL_CAP, SNAPSHOT_CAP, Thinned
    cfg = Config(steps=450, record_every=1, eval_every=1, width=8, depth=1)
    h = train(cfg).history
    snapshots, evals = Thinned(SNAPSHOT_CAP, stride=cfg.record_every), Thinned(EVAL_CAP, stride=cfg.eval_every)
    evals.add(0, 0)
    for step in range(cfg.steps):
        if snapshots.due(step) or step == cfg.steps - 1:
            snapshots.add(step, step)
        if evals.due(step + 1) or step + 1 == cfg.steps:
            evals.add(step + 1, step + 1)
    assert len(h.snapshots) < cfg.steps and len(h.evals) < cfg.steps   # both thinned
    assert (h.snapshots.steps, h.snapshots.stride) == (snapshots.steps, snapshots.stride)
    assert (h.evals.steps, h.evals.stride) == (evals.steps, evals.stride)
