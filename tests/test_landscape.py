"""The Why-BN-helps core: the open training loop, landscape probes, learning-rate sweep, noisy BN."""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from bnviz.experiments import landscape, lr_sweep, noisy_bn
from bnviz.config import Config
from bnviz.train import train_steps
from taps import block_taps
from bnviz.models import loss_fn
from bnviz.train import train

TINY = Config(steps=40, depth=2, width=16, record_every=10, eval_every=20)


@pytest.mark.parametrize("norm", ["batchnorm", "none"])
def test_loop_reproduces_train_bit_for_bit(norm):
    config = TINY.replace(norm=norm)
    curves, model = train_steps(config)
    run = train(config)
    _, losses, acc = run.history.loss_curve()
    np.testing.assert_array_equal(curves.loss, losses)
    np.testing.assert_array_equal(curves.batch_acc, acc)
    for (key, a), b in zip(model.state_dict().items(), run.model.state_dict().values()):
        if key.endswith(("running_mean", "running_var")):   # train()'s are replayed from its batch trace
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=key)
        else:
            assert torch.equal(a, b), key
    steps, test_acc = run.history.eval_curve("test_acc")
    np.testing.assert_array_equal(curves.eval_steps, steps)
    np.testing.assert_allclose(curves.test_acc, test_acc)


class Quadratic(nn.Module):
    """L(w) = 1/2 w^T A w: gradient A w, so every landscape quantity has a closed form."""

    def __init__(self, a: torch.Tensor, w: torch.Tensor):
        super().__init__()
        self.a = a
        self.w = nn.Parameter(w.clone())

    def loss(self) -> torch.Tensor:
        return 0.5 * self.w @ self.a @ self.w


def test_probe_on_a_quadratic_matches_the_closed_form():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((4, 4))
    a = torch.tensor(m @ m.T + np.eye(4))
    w = torch.tensor(rng.standard_normal(4))
    etas = [0.01, 0.05, 0.1]
    p = landscape.probe(Quadratic(a, w), lambda mod: mod.loss(), etas)
    g = a @ w
    ag = a @ g
    for eta, loss, diff in zip(etas, p.losses, p.grad_diffs):
        moved = w - eta * g
        assert loss == pytest.approx(float(0.5 * moved @ a @ moved), rel=1e-12)
        assert diff == pytest.approx(eta * float(ag.norm()), rel=1e-10)
    assert p.grad_norm == pytest.approx(float(g.norm()), rel=1e-12)
    assert p.beta == pytest.approx(float(ag.norm() / g.norm()), rel=1e-10)
    assert p.beta <= float(torch.linalg.eigvalsh(a).max()) + 1e-9
    values = [float(0.5 * w @ a @ w)] + [float(0.5 * (w - e * g) @ a @ (w - e * g)) for e in etas]
    assert p.loss_range == pytest.approx(max(values) - min(values), rel=1e-10)
    assert p.max_grad_diff == pytest.approx(max(p.grad_diffs))


@pytest.mark.parametrize("norm", ["batchnorm", "none"])
def test_probe_on_a_network_matches_a_direct_computation(norm):
    """The same quantities from torch.func.functional_call on a flat parameter vector."""
    from torch.func import functional_call

    config = TINY.replace(norm=norm)
    _, model = train_steps(config.replace(steps=10))
    model.train()
    g_ = torch.Generator().manual_seed(0)
    x = torch.randn(32, 64, generator=g_, dtype=torch.float64)
    y = torch.randint(0, 10, (32,), generator=g_)
    before = copy.deepcopy(model.state_dict())
    etas = [0.02, 0.1, 0.4]
    p = landscape.probe(model, lambda m: loss_fn(m(x), y), etas)
    for k, v in model.state_dict().items():      # the shared model is untouched
        assert torch.equal(v, before[k])

    net = copy.deepcopy(model).double()
    names = [n for n, _ in net.named_parameters()]
    shapes = [q.shape for _, q in net.named_parameters()]
    buffers = {n: b for n, b in net.named_buffers()}

    def loss_at(flat: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            params[n] = flat[offset:offset + k].view(s)
            offset += k
        # fresh copies of the buffers: BN's running statistics must not leak between evaluations
        state = {**params, **{n: b.clone() for n, b in buffers.items()}}
        return loss_fn(functional_call(net, state, (x,)), y)

    w = torch.cat([q.detach().reshape(-1) for q in net.parameters()]).requires_grad_()
    loss0 = loss_at(w)
    (g,) = torch.autograd.grad(loss0, w)
    assert p.loss0 == pytest.approx(loss0.item(), rel=1e-12)
    for eta, loss, diff in zip(etas, p.losses, p.grad_diffs):
        moved = (w.detach() - eta * g).requires_grad_()
        value = loss_at(moved)
        (g2,) = torch.autograd.grad(value, moved)
        assert loss == pytest.approx(value.item(), rel=1e-10)
        assert diff == pytest.approx((g - g2).norm().item(), rel=1e-8)
    assert p.beta == pytest.approx(max(d / (e * g.norm().item()) for d, e in zip(p.grad_diffs, etas)))


def test_probes_do_not_change_the_run_and_land_on_the_requested_steps():
    config = TINY.replace(steps=30)
    probed = landscape.train_with_probes(config, step_multiples=(0.5, 1.0), n_probes=4)
    clean, _ = train_steps(config)
    np.testing.assert_array_equal(probed.curves.loss, clean.loss)
    steps, beta = probed.series("beta")
    assert list(steps) == landscape.probe_steps(30, 4) == [0, 10, 19, 29]
    assert np.all(np.isfinite(beta)) and np.all(beta > 0)
    np.testing.assert_allclose(probed.probes[0].etas, [0.5 * config.lr, config.lr])


def test_sweep_marks_divergence_and_finds_the_largest_stable_rate():
    config = TINY.replace(steps=60, depth=3, width=32, init_scale=2.0)   # diverges at lr 10 without BN
    points = lr_sweep.sweep(config, lrs=(0.05, 10.0))
    by = {(p.label, p.lr): p for p in points}
    assert set(by) == {("with BN", 0.05), ("with BN", 10.0), ("without BN", 0.05), ("without BN", 10.0)}
    plain = by[("without BN", 10.0)]
    assert plain.diverged_at is not None and not plain.stable and math.isnan(plain.final_loss)
    assert math.isnan(plain.test_acc)
    assert by[("without BN", 0.05)].stable
    assert lr_sweep.largest_stable(points, "without BN") == 0.05
    # the numbers are those of the same run trained directly
    curves, _ = train_steps(config.without_norm().replace(lr=0.05, eval_every=60))
    assert by[("without BN", 0.05)].final_loss == pytest.approx(curves.loss[-6:].mean())
    assert by[("without BN", 0.05)].initial_loss == curves.loss[0]


def test_stability_rule():
    def point(final, diverged=None):
        return lr_sweep.SweepPoint("x", 1.0, initial_loss=2.0, final_loss=final, test_acc=0.5, diverged_at=diverged)
    assert point(0.9).stable
    assert not point(1.1).stable               # did not halve the loss
    assert not point(math.nan, diverged=3).stable
    assert lr_sweep.largest_stable([point(1.1)], "x") is None


def test_noise_free_noisy_bn_is_plain_bn():
    curves = noisy_bn.train_noisy(TINY, noisy_bn.Noise(shift=0.0, scale=1.0))
    clean, _ = train_steps(TINY)
    np.testing.assert_array_equal(curves.loss, clean.loss)


def test_noise_shifts_and_scales_each_channel_by_the_drawn_amounts():
    from bnviz.models import build
    model = build(TINY, (64,), 10)
    noise = noisy_bn.Noise(shift=1.5, scale=3.0)
    noisy_bn.add_noise(model, noise, seed=7)
    model.train()
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(1))
    taps = block_taps(model, x)
    # the draws the hook made, in its order: per BN layer, first the shifts then the scales
    gen = torch.Generator().manual_seed(7)
    for block in taps:
        c = block["norm_input"].shape[1]
        m = (torch.rand(c, generator=gen) * 2 - 1) * noise.shift
        s = 1 + torch.rand(c, generator=gen) * (noise.scale - 1)
        out = block["pre_activation"]          # BN output after the hook = input of the activation
        # gamma = 1, beta = 0 at initialization: BN's output has mean 0 and (biased) variance ~1
        np.testing.assert_allclose(out.mean(0).numpy(), m.numpy(), atol=1e-5)
        np.testing.assert_allclose(out.std(0, unbiased=False).numpy(), s.numpy(), rtol=1e-3)
        assert (m.abs() <= noise.shift).all() and (s >= 1).all() and (s <= noise.scale).all()
    model.eval()
    for block, layer in zip(block_taps(model, x), model.blocks):
        bn = layer.norm
        with torch.no_grad():
            expected = nn.functional.batch_norm(block["norm_input"], bn.running_mean, bn.running_var, bn.weight,
                                                bn.bias, False, 0.0, bn.eps) * noise.mean_scale
        np.testing.assert_allclose(block["pre_activation"].numpy(), expected.numpy(), atol=1e-6)


def test_noisy_bn_needs_bn_and_valid_noise():
    from bnviz.models import build
    with pytest.raises(ValueError, match="BatchNorm"):
        noisy_bn.add_noise(build(TINY.without_norm(), (64,), 10), noisy_bn.Noise(), 0)
    with pytest.raises(ValueError):
        noisy_bn.Noise(scale=0.5)
    with pytest.raises(ValueError):
        noisy_bn.Noise(shift=-1)
