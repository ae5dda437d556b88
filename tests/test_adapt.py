"""Precise BN, AdaBN and fine-tuning against numpy forward passes written out by hand."""
import numpy as np
import pytest
import torch

from bnviz.experiments import adapt
from bnviz.config import Config
from bnviz.data import shift_features
from bnviz.models import accuracy
from bnviz.train import train

CONFIG = Config(steps=150, width=32, depth=2, batch_size=16, record_every=1000, eval_every=1000)


def numpy_forward(model, x, stats=None, record=None):
    """A Linear-BN-ReLU MLP (placement "before", no dropout) in float64 numpy.

    ``stats=None``: every BN layer normalizes with the mean and biased variance of ``x`` (train
    mode); else with ``stats[i] = (mean, var)`` (eval mode). ``record`` collects each BN input's
    (mean, unbiased variance) over ``x``.
    """
    h = x.numpy().astype(np.float64)
    for i, block in enumerate(model.blocks):
        w = block.weight.weight.detach().double().numpy()
        bias = block.weight.bias
        z = h @ w.T + (0.0 if bias is None else bias.detach().double().numpy())
        if record is not None:
            record.append((z.mean(0), z.var(0, ddof=1)))
        mu, var = (z.mean(0), z.var(0)) if stats is None else stats[i]
        bn = block.norm
        gamma, beta = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
        h = np.maximum(gamma * (z - mu) / np.sqrt(var + bn.eps) + beta, 0.0)
    head = model.head[-1]
    return h @ head.weight.detach().double().numpy().T + head.bias.detach().double().numpy()


@pytest.fixture(scope="module")
def run():
    return train(CONFIG)


def _buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_untouched(model, before):
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_precise_bn_batches_are_shuffled_epochs():
    got = adapt.precise_bn_batches(50, 16, 7, seed=3)
    assert len(got) == 7 and all(len(b) == 16 for b in got)
    for epoch in range(0, 6, 3):          # 3 full batches per epoch of 50 (2 left over, dropped)
        idx = torch.cat(got[epoch:epoch + 3])
        assert len(set(idx.tolist())) == 48
    assert [b.tolist() for b in got] == [b.tolist() for b in adapt.precise_bn_batches(50, 16, 7, seed=3)]
    with pytest.raises(ValueError):
        adapt.precise_bn_batches(50, 1, 3)


@pytest.mark.parametrize("n_batches", [1, 5, 120])
def test_precise_bn_is_the_mean_of_batch_statistics(run, n_batches):
    model, x = run.model, run.dataset.x_train
    before = _buffers(model)
    fixed = adapt.precise_bn(model, x, 16, n_batches, seed=1)
    _assert_untouched(model, before)
    per_batch = []
    for idx in adapt.precise_bn_batches(len(x), 16, n_batches, seed=1):
        rec = []
        numpy_forward(model, x[idx], record=rec)
        per_batch.append(rec)
    for layer, (_, bn) in enumerate(fixed.batchnorms()):
        mean = np.mean([b[layer][0] for b in per_batch], axis=0)
        var = np.mean([b[layer][1] for b in per_batch], axis=0)
        np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-4, atol=1e-5)
        assert bn.momentum == CONFIG.momentum
    assert not fixed.training


def test_adabn_statistics_are_the_target_population_statistics(run):
    model, d = run.model, run.dataset
    target = shift_features(d.x_test, "contrast", 0.7)
    before = _buffers(model)
    adapted = adapt.adabn(model, target)
    _assert_untouched(model, before)
    rec = []
    numpy_forward(model, target, record=rec)
    for layer, (_, bn) in enumerate(adapted.batchnorms()):
        np.testing.assert_allclose(bn.running_mean.numpy(), rec[layer][0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.running_var.numpy(), rec[layer][1], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        logits = adapted(target).double().numpy()
    np.testing.assert_allclose(logits, numpy_forward(model, target, stats=rec), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kind, amount", [("offset", 2.0), ("scale", 1.5)])
def test_adabn_undoes_an_offset_or_scale_exactly(run, kind, amount):
    """BN right after a bias-free Linear layer: W(x + a) = Wx + Wa and W(s x) = s Wx; the first
    BN layer's target statistics remove both, so the outputs equal the unshifted ones."""
    model, d = run.model, run.dataset
    target = shift_features(d.x_test, kind, amount)
    with torch.no_grad():
        plain = adapt.adabn(model, d.x_test)(d.x_test)
        moved = adapt.adabn(model, target)(target)
    torch.testing.assert_close(moved, plain, rtol=1e-3, atol=2e-3)
    curve = adapt.shift_curve(model, d.x_test, d.y_test, kind, [0.0, amount])
    assert curve.adapted[1] == pytest.approx(curve.adapted[0], abs=1 / len(d.y_test) + 1e-9)
    model.eval()
    assert curve.frozen[0] == pytest.approx(accuracy(model(d.x_test), d.y_test))


def test_precise_curve_limits(run):
    model, d = run.model, run.dataset
    curve = adapt.precise_bn_curve(model, d.x_train, d.x_test, d.y_test, 16, [1, 4], repeats=2)
    assert curve.acc.shape == (2, 2) and curve.loss.shape == (2, 2)
    stats = []
    numpy_forward(model, d.x_train, record=stats)
    oracle = numpy_forward(model, d.x_test, stats=stats)
    assert curve.population.acc == pytest.approx(float(np.mean(oracle.argmax(1) == d.y_test.numpy())), abs=1e-6)
    model.eval()
    with torch.no_grad():
        assert curve.ema.acc == pytest.approx(accuracy(model(d.x_test), d.y_test))


def test_finetune_frozen_keeps_bn_and_trainable_moves_it(run):
    model, d = run.model, run.dataset
    before = _buffers(model)
    x, y = shift_features(d.x_train[:64], "offset", 1.0), d.y_train[:64]
    frozen = adapt.finetune(model, x, y, bn="frozen", steps=20, batch_size=16, lr=0.01)
    trainable = adapt.finetune(model, x, y, bn="trainable", steps=20, batch_size=16, lr=0.01)
    _assert_untouched(model, before)
    for (_, src), (_, f), (_, t) in zip(model.batchnorms(), frozen.batchnorms(), trainable.batchnorms()):
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(f, name), getattr(src, name)), name
            assert not torch.equal(getattr(t, name), getattr(src, name)), name
        assert int(t.num_batches_tracked) == int(src.num_batches_tracked) + 20
    assert not torch.equal(frozen.blocks[0].weight.weight, model.blocks[0].weight.weight)
    with pytest.raises(ValueError):
        adapt.finetune(model, x, y, bn="sometimes", steps=1, batch_size=4, lr=0.01)


def test_transfer_at_zero_shift_matches_the_source(run):
    model, d = run.model, run.dataset
    result = adapt.transfer(model, d.x_train, d.y_train, d.x_test, d.y_test, "offset", 0.0, n_labelled=32,
                            steps=5, batch_size=16, lr=0.01)
    assert result.frozen == result.source_on_source
    assert result.n_labelled == 32
    stats = adapt.first_layer_stats(model, d.x_test)
    rec = []
    numpy_forward(model, d.x_test, record=rec)
    np.testing.assert_allclose(stats.target_mean, rec[0][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.source_mean, model.batchnorms()[0][1].running_mean.numpy())


def test_no_batchnorm_model_is_returned_unchanged():
    run = train(CONFIG.replace(norm="layernorm", steps=5))
    copy_ = adapt.precise_bn(run.model, run.dataset.x_train, 16, 2)
    assert all(torch.equal(a, b) for a, b in zip(copy_.state_dict().values(), run.model.state_dict().values()))
    assert adapt.first_layer_stats(run.model, run.dataset.x_test) is None
    assert copy_ is not run.model
