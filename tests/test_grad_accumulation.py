"""Gradient accumulation in run_loop against one forward pass with per-micro-batch BN, and the
statistics-noise estimate against Monte-Carlo."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnviz import optim
from bnviz.config import Config
from bnviz.experiments import grad_accumulation as ga
from bnviz.train import micro_batch_slices, run_loop

pytestmark = pytest.mark.timeout(300)


def _net(norm: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6, bias=False), norm, nn.ReLU(), nn.Linear(6, 3)).double()


def _batch(n: int = 12):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def _one_step(model: nn.Module, x, y, k: int) -> nn.Module:
    run_loop(model, optim.Sgd(model.parameters(), lr=0.3), iter([(x, y)]), 1, micro_batches=k)
    return model


def test_slices_cover_the_batch_in_order():
    assert micro_batch_slices(10, 3) == [slice(0, 3), slice(3, 7), slice(7, 10)]
    assert micro_batch_slices(64, 8)[0] == slice(0, 8)
    with pytest.raises(ValueError):
        micro_batch_slices(4, 5)


@pytest.mark.parametrize("norm", [nn.LayerNorm(6), nn.GroupNorm(2, 6)])
def test_per_sample_norms_get_the_batch_gradient(norm):
    """GroupNorm / LayerNorm: k micro-batches accumulated update the weights as the whole batch does."""
    x, y = _batch()
    whole = _one_step(_net(copy.deepcopy(norm)), x, y, 1)
    accumulated = _one_step(_net(copy.deepcopy(norm)), x, y, 4)
    for a, b in zip(whole.parameters(), accumulated.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_batchnorm_accumulated_is_bn_per_micro_batch():
    """BN: the accumulated update equals the gradient of the batch's mean loss through a network
    whose BN normalizes each micro-batch by its own statistics (torch's F.batch_norm per slice, one
    forward pass); the running statistics are those of BN applied to the micro-batches in turn."""
    x, y = _batch()
    k, lr = 3, 0.3
    model = _one_step(_net(nn.BatchNorm1d(6)), x, y, k)
    ref = _net(nn.BatchNorm1d(6))
    lin, bn, head = ref[0], ref[1], ref[3]
    h = lin(x)
    parts = [F.batch_norm(h[s], None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
             for s in micro_batch_slices(len(x), k)]
    loss = F.cross_entropy(head(torch.relu(torch.cat(parts))), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    with torch.no_grad():
        for s in micro_batch_slices(len(x), k):
            bn(h[s])
    for p, g, got in zip(ref.parameters(), grads, model.parameters()):
        torch.testing.assert_close(got, p - lr * g, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model[1].running_mean, bn.running_mean)
    torch.testing.assert_close(model[1].running_var, bn.running_var)
    assert int(model[1].num_batches_tracked) == k


def test_mean_noise_against_monte_carlo():
    """Batch means of n i.i.d. normal samples: the successive-difference estimate recovers
    sigma / sqrt(n) (within 10 % over 400 steps), here for a mean that drifts slowly."""
    rng = np.random.default_rng(0)
    n, sigma = 8, np.array([0.5, 1.0, 3.0])
    means, variances = [], []
    for t in range(800):
        batch = rng.normal(0.001 * t, sigma, size=(n, 3))
        means.append(batch.mean(0))
        variances.append(batch.var(0))
    noise = ga.mean_noise(means, variances, n)
    np.testing.assert_allclose(noise.theory, sigma / np.sqrt(n), rtol=0.1)
    np.testing.assert_allclose(noise.measured, sigma / np.sqrt(n), rtol=0.1)
    assert abs(noise.pooled_ratio - 1) < 0.1
    assert ga.mean_noise(means[:4], variances[:4], n) is None


def test_compare_runs_pairs_and_measures_bn_per_micro_batch():
    config = Config(steps=60, width=32, depth=2, batch_size=32, eval_every=20)
    runs = ga.compare(config, 4)
    assert [(r.norm, r.micro_batches) for r in runs] == [(n, k) for n in ga.NORMS for k in (1, 4)]
    by = {(r.norm, r.micro_batches): r for r in runs}
    assert by[("batchnorm", 1)].noise.n == 32 and by[("batchnorm", 4)].noise.n == 8
    assert by[("groupnorm", 1)].noise is None
    for norm in ("groupnorm", "layernorm"):      # the same gradients, up to float32 rounding
        np.testing.assert_allclose(by[(norm, 1)].losses, by[(norm, 4)].losses, rtol=1e-3)
    assert not np.allclose(by[("batchnorm", 1)].losses, by[("batchnorm", 4)].losses, rtol=1e-3)
    assert ga.problems(config, 32) and not ga.problems(config, 16)
