"""Gradients vs depth against independent oracles: Yang et al.'s growth factor by Monte-Carlo (before
the page draws it as theory), the recorded gradient norms against autograd on a second, functional
float64 implementation and against finite differences."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnviz.config import Config
from bnviz.data import load
from bnviz.experiments import depth_gradients as dg


def _bn_relu_chain_norms(width, batch, depth, seed):
    """Gradient norms of a BN-ReLU chain built from functional ops alone (no bnviz code)."""
    g = torch.Generator().manual_seed(seed)
    ws = [(torch.randn(width, width, generator=g) * math.sqrt(2 / width)).requires_grad_() for _ in range(depth)]
    h = torch.randn(batch, width, generator=g)
    for w in ws:
        z = h @ w.T
        h = F.relu((z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5))
    head = torch.randn(10, width, generator=g) / math.sqrt(width)
    y = torch.randint(0, 10, (batch,), generator=g)
    F.cross_entropy(h @ head.T, y).backward()
    return np.array([w.grad.norm().item() for w in ws])


@pytest.mark.timeout(300)
def test_growth_factor_sqrt_pi_over_pi_minus_one_by_monte_carlo():
    """Wide networks, large batches: the fitted per-layer growth is within 2 % of 1.211."""
    fits = [dg.fitted_growth(_bn_relu_chain_norms(256, 256, 30, s)) for s in range(4)]
    assert abs(np.mean(fits) / math.sqrt(math.pi / (math.pi - 1)) - 1) < 0.02, fits
    assert dg.GROWTH == pytest.approx(1.2111739, abs=1e-6)


def test_fitted_growth_recovers_a_geometric_sequence():
    norms = 3.0 * 1.3 ** (20 - np.arange(1, 21))
    assert dg.fitted_growth(norms) == pytest.approx(1.3)


def _functional_loss(model, x, y, weights):
    """The network's loss from its weights, in float64, written with functional ops (a second
    implementation of Block/Net/SkipNet's forward)."""
    h = x.double()
    skip = isinstance(model, dg.SkipNet)
    for i, (block, w) in enumerate(zip(model.blocks, weights)):
        z = h @ w.T
        if block.linear_bias is not None:
            z = z + block.linear_bias.double()
        if block.norm is not None:
            z = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + block.norm.eps)
            z = z * block.norm.weight.double() + block.norm.bias.double()
        z = F.relu(z)
        h = h + z if skip and i > 0 else z
    head = model.head
    return F.cross_entropy(h @ head.weight.double().T + head.bias.double(), y)


@pytest.mark.parametrize("kind", list(dg.KINDS))
def test_recorded_norms_match_autograd_of_a_second_implementation_and_finite_differences(kind):
    config = Config(steps=1, width=12, batch_size=16, seed=2, eval_every=1)
    run = dg.train_kind(config, kind, 6)
    data = load(config)
    model = dg.deep_mlp(kind, 6, data.n_features, 12, data.n_classes, torch.Generator().manual_seed(2))
    for b in model.blocks:
        b.linear_bias = b.weight.bias
    from bnviz.train import build_for
    _, _, stream = build_for(config, data, model)
    x, y = next(stream)
    weights = [b.weight.weight.detach().double().requires_grad_() for b in model.blocks]
    loss = _functional_loss(model, x, y, weights)
    grads = torch.autograd.grad(loss, weights)
    np.testing.assert_allclose(run.norms[0], [g.norm().item() for g in grads], rtol=1e-4)
    # finite differences on a few entries of the first and last layer, float64
    for layer in (0, 5):
        for (r, c) in ((0, 0), (3, 7)):
            eps = 1e-6
            plus = [w.detach().clone() for w in weights]
            minus = [w.detach().clone() for w in weights]
            plus[layer][r, c] += eps
            minus[layer][r, c] -= eps
            fd = (_functional_loss(model, x, y, plus) - _functional_loss(model, x, y, minus)).item() / (2 * eps)
            assert fd == pytest.approx(grads[layer][r, c].item(), rel=1e-4, abs=1e-9)


@pytest.mark.timeout(300)
def test_bn_explodes_skips_and_plain_stay_level_and_training_shrinks_it():
    config = Config(steps=30, width=64, lr=0.05, eval_every=10)
    runs = dg.train_all(config, 20)
    bn, skip, plain = (runs[dg.KINDS[k]] for k in ("bn", "bn_skip", "plain"))
    assert bn.norms.shape == (30, 20)
    assert 1.12 < dg.fitted_growth(bn.norms[0]) < 1.32       # 64 units, batch 64: near 1.21
    assert dg.fitted_growth(plain.norms[0]) < 1.06
    assert bn.growth()[0] > 10 * plain.growth()[0]
    assert bn.growth()[-1] < bn.growth()[0] / 3                # a few steps tame it
    init = dg.at_init(config, 20)
    np.testing.assert_allclose(init[dg.KINDS["bn"]].norms[0], bn.norms[0], rtol=1e-6)
