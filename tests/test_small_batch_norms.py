"""Batch Renorm, Ghost BN and Weight Standardization against torch's BatchNorm and numpy."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnviz.small_batch_norms import (BatchRenorm, GhostBatchNorm, RenormSchedule, WSConv2d, WSLinear,
                                     standardize_weight)

BN_EQUAL = RenormSchedule(r_max=1.0, d_max=0.0)   # r = 1, d = 0 at every step


def _pair(ours: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    torch_bn = (nn.BatchNorm1d if len(shape) < 4 else nn.BatchNorm2d)(shape[1], momentum=ours.momentum).double()
    with torch.no_grad():
        ours.weight.copy_(torch.linspace(0.5, 2.0, shape[1]))
        ours.bias.copy_(torch.linspace(-1.0, 1.0, shape[1]))
        torch_bn.weight.copy_(ours.weight)
        torch_bn.bias.copy_(ours.bias)
    return torch_bn


def _grads(module: nn.Module, x: torch.Tensor, probe: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_(True)
    y = module(x)
    gx, gw, gb = torch.autograd.grad((y * probe).sum(), (x, module.weight, module.bias))
    return y.detach(), gx, gw, gb


@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 7), (4, 3, 5, 5)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_renorm_with_r1_d0_is_batchnorm(shape, momentum):
    """Forward, gradients (input, gamma, beta), running statistics over 5 steps and eval mode."""
    gen = torch.Generator().manual_seed(0)
    ours = BatchRenorm(shape[1], momentum=momentum, schedule=BN_EQUAL).double()
    ref = _pair(ours, shape)
    for _ in range(5):
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 2
        probe = torch.randn(shape, generator=gen, dtype=torch.float64)
        for a, b in zip(_grads(ours, x, probe), _grads(ref, x, probe)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-12, atol=1e-12)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 5
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-12, atol=1e-12)


def test_batch_renorm_warmup_is_batchnorm_then_limits_relax():
    schedule = RenormSchedule(r_max=3.0, d_max=5.0, warmup=10, ramp=20)
    assert schedule.limits(0) == (1.0, 0.0) and schedule.limits(10) == (1.0, 0.0)
    assert schedule.limits(20) == (2.0, 2.5) and schedule.limits(30) == (3.0, 5.0) == schedule.limits(999)


def test_unclipped_batch_renorm_outputs_what_eval_mode_would_and_gradients_skip_r_and_d():
    """With limits that never clip, x_hat = (x - mu_B)/sigma_B * r + d = (x - mu)/sigma (the running
    statistics before the update): eval mode's output. r and d carry no gradient, so the input
    gradient is torch BN's with gamma * r in place of gamma."""
    gen = torch.Generator().manual_seed(1)
    c = 3
    ours = BatchRenorm(c, schedule=RenormSchedule(r_max=1e6, d_max=1e6, warmup=0, ramp=1)).double()
    with torch.no_grad():
        ours.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        ours.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
        ours.num_batches_tracked.fill_(5)
        ours.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        ours.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    mu, var = ours.running_mean.clone(), ours.running_var.clone()
    x = torch.randn(8, c, generator=gen, dtype=torch.float64) * 2 + 1
    probe = torch.randn(8, c, generator=gen, dtype=torch.float64)
    y, gx, gw, _ = _grads(ours, x, probe)
    expected = (x - mu) / torch.sqrt(var + ours.eps) * ours.weight.detach() + ours.bias.detach()
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    sigma_b = torch.sqrt(x.var(0, unbiased=False) + ours.eps)
    r = sigma_b / torch.sqrt(var + ours.eps)
    torch.testing.assert_close(ours.last_r, r)
    xr = x.clone().requires_grad_(True)
    ref = F.batch_norm(xr, None, None, ours.weight.detach() * r, None, training=True, eps=ours.eps)
    (gx_ref,) = torch.autograd.grad((ref * probe).sum(), xr)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-9, atol=1e-10)
    x_hat = (x - x.mean(0)) / sigma_b * r + (x.mean(0) - mu) / torch.sqrt(var + ours.eps)
    torch.testing.assert_close(gw, (probe * x_hat).sum(0), rtol=1e-10, atol=1e-10)


def test_clipping_limits_r_and_d():
    bn = BatchRenorm(2, schedule=RenormSchedule(r_max=2.0, d_max=0.5, warmup=0, ramp=1)).double()
    with torch.no_grad():
        bn.num_batches_tracked.fill_(3)
    x = torch.tensor([[10.0, 0.0], [30.0, 0.001], [50.0, -0.001]], dtype=torch.float64)
    bn(x)
    assert bn.last_r.tolist() == [2.0, 0.5]        # sigma_B / sigma far above 2 and far below 1/2
    assert bn.last_d[0].item() == 0.5               # mean 30 against a running mean of 0


@pytest.mark.parametrize("shape", [(8, 3), (6, 4, 3, 3)])
def test_ghost_bn_with_one_ghost_batch_is_batchnorm(shape):
    gen = torch.Generator().manual_seed(2)
    ours = GhostBatchNorm(shape[1], ghost_size=shape[0]).double()
    ref = _pair(ours, shape)
    for _ in range(3):
        x = torch.randn(shape, generator=gen, dtype=torch.float64) - 1
        probe = torch.randn(shape, generator=gen, dtype=torch.float64)
        for a, b in zip(_grads(ours, x, probe), _grads(ref, x, probe)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x))


def test_ghost_bn_normalizes_each_ghost_batch_by_itself():
    """Each ghost batch's output is torch's BN of that ghost batch alone; the running statistics
    move towards the average of the ghost batches' means and unbiased variances; a last ghost
    batch of one sample joins the one before."""
    gen = torch.Generator().manual_seed(3)
    ours = GhostBatchNorm(3, ghost_size=4, momentum=1.0).double()
    assert ours.ghost_batches(13) == [4, 4, 5] and ours.ghost_batches(14) == [4, 4, 4, 2]
    x = torch.randn(14, 3, generator=gen, dtype=torch.float64) * 2
    y = ours(x)
    chunks = torch.split(x, [4, 4, 4, 2])
    expected = torch.cat([F.batch_norm(c, None, None, training=True, eps=ours.eps) for c in chunks])
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(ours.running_mean, torch.stack([c.mean(0) for c in chunks]).mean(0))
    torch.testing.assert_close(ours.running_var, torch.stack([c.var(0, unbiased=True) for c in chunks]).mean(0))


def test_ghost_size_below_two_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        GhostBatchNorm(3, ghost_size=1)


def _numpy_ws(w: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    flat = w.reshape(w.shape[0], -1)
    out = np.empty_like(flat)
    for i, row in enumerate(flat):
        out[i] = (row - row.mean()) / np.sqrt(row.var() + eps)
    return out.reshape(w.shape)


def test_weight_standardization_against_numpy():
    gen = torch.Generator().manual_seed(4)
    lin = WSLinear(5, 3).double()
    conv = WSConv2d(2, 4, 3, padding=1).double()
    for w in (lin.weight, conv.weight):
        np.testing.assert_allclose(standardize_weight(w.detach()).numpy(), _numpy_ws(w.detach().numpy()), rtol=1e-12)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    expected = x.numpy() @ _numpy_ws(lin.weight.detach().numpy()).T + lin.bias.detach().numpy()
    np.testing.assert_allclose(lin(x).detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    img = torch.randn(2, 2, 6, 6, generator=gen, dtype=torch.float64)
    ws = torch.from_numpy(_numpy_ws(conv.weight.detach().numpy()))
    torch.testing.assert_close(conv(img), F.conv2d(img, ws, conv.bias, padding=1))


def test_weight_standardization_gradient_matches_finite_differences():
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: standardize_weight(t), (w,))
