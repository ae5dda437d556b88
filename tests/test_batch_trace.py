"""A momentum change derived from the batch trace equals training with that momentum.

The oracle is a second, independent training run with the other momentum (torch's own BN, or the
reference BN, updating its buffers itself), compared to 1e-6.
"""
import numpy as np
import pytest
import torch

from bnviz.config import Config
from bnviz.data import load
from bnviz.train import train, with_momentum

BASE = Config(steps=120, record_every=10, eval_every=40, bn_diagnostics=True)


def _assert_same_run(got, want):
    g, w = got.history, want.history
    assert g.config == w.config
    assert g.losses.steps == w.losses.steps and g.losses.items == w.losses.items   # bit for bit
    assert g.snapshots.steps == w.snapshots.steps
    for a, b in zip(g.snapshots, w.snapshots):
        assert a.norms.keys() == b.norms.keys()
        for i in a.norms:
            for name in ("running_mean", "running_var", "batch_mean", "batch_var", "weight", "bias"):
                if getattr(a.norms[i], name) is None or getattr(b.norms[i], name) is None:
                    assert getattr(a.norms[i], name) is getattr(b.norms[i], name) is None
                    continue
                np.testing.assert_allclose(getattr(a.norms[i], name), getattr(b.norms[i], name), rtol=1e-6, atol=1e-6,
                                           err_msg=f"step {a.step} layer {i} {name}")
    assert g.evals.steps == w.evals.steps
    for a, b in zip(g.evals, w.evals):
        assert a.test_acc == pytest.approx(b.test_acc, abs=1e-6)
        assert a.test_loss == pytest.approx(b.test_loss, rel=1e-5, abs=1e-6)
        assert a.test_acc_population == pytest.approx(b.test_acc_population, abs=1e-6)
    for (k, a), (k2, b) in zip(got.model.state_dict().items(), want.model.state_dict().items()):
        assert k == k2
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-6, atol=1e-6, msg=k)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("norm", ["batchnorm", "reference"])
@pytest.mark.parametrize("momentum", [0.01, 0.5, 1.0, 0.0, None])
def test_derived_momentum_equals_retraining(norm, momentum):
    base = BASE.replace(norm=norm)
    data = load(base)
    run = train(base, dataset=data, trace=True)
    assert run.trace is not None and run.trace.done == base.steps
    _assert_same_run(with_momentum(run, momentum), train(base.replace(momentum=momentum), dataset=data))


@pytest.mark.timeout(120)
def test_trace_leaves_the_model_as_plain_training_does():
    """With the trace, train()'s model has the config's momentum and running statistics; the
    losses equal those of a run recorded without any instrumentation (record=False)."""
    config = BASE.replace(momentum=0.2)
    data = load(config)
    run = train(config, dataset=data, trace=True)
    assert run.trace is not None
    bare = train(config, dataset=data, record=False)
    assert [m.momentum for _, m in run.model.batchnorms()] == [0.2] * len(run.model.batchnorms())
    assert run.history.losses.items == [item for s, item in zip(bare.history.losses.steps, bare.history.losses.items)
                                        if s in set(run.history.losses.steps)]
    for (_, a), (_, b) in zip(run.model.batchnorms(), bare.model.batchnorms()):
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-6, atol=1e-6)
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == config.steps


@pytest.mark.timeout(120)
def test_batch_statistics_of_the_trace_against_the_layer_input(monkeypatch):
    """The trace's step-t row is the mean and unbiased variance of the BN input of step t, as
    numpy computes them from the input itself (copied by an independent forward hook)."""
    import bnviz.train as T
    config = BASE.replace(steps=5, bn_diagnostics=False)  # its passes in training mode would count too
    data = load(config)
    seen: list[list[np.ndarray]] = []

    def build_for_with_hooks(c, d):
        model, optimizer, stream = original(c, d)
        for _, m in model.batchnorms():
            m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().numpy().copy())
                                    if mod.training else None)
        return model, optimizer, stream

    original = T.build_for
    monkeypatch.setattr(T, "build_for", build_for_with_hooks)
    run = train(config, dataset=data, trace=True)
    layers = len(run.model.batchnorms())
    assert len(seen) == config.steps * layers
    for step in range(config.steps):
        for (i, (mean, var)), x in zip(run.trace.batch_stats(step).items(), seen[step * layers:(step + 1) * layers]):
            np.testing.assert_allclose(mean, x.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(var, x.astype(np.float64).var(0, ddof=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["none", "layernorm"])
def test_without_batchnorm_momentum_changes_nothing(norm):
    config = BASE.replace(norm=norm, steps=30)
    run = train(config, dataset=load(BASE), trace=True)
    assert run.trace is None
    _assert_same_run(with_momentum(run, 0.5), train(config.replace(momentum=0.5), dataset=load(BASE)))


def test_a_run_keeps_a_trace_only_when_asked():
    """The trace serves a momentum control only: without one a run keeps none (and with_momentum
    then says it cannot derive), and its numbers are the traced run's."""
    config = BASE.replace(steps=30)
    data = load(config)
    plain, traced = train(config, dataset=data), train(config, dataset=data, trace=True)
    assert plain.trace is None and not plain.eval_weights and traced.trace is not None
    assert with_momentum(plain, 0.5) is None
    assert plain.history.losses.items == traced.history.losses.items
    assert [e.test_acc for e in plain.history.evals.items] == [e.test_acc for e in traced.history.evals.items]
