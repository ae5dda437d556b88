"""The CPU synchronized BN in real gloo process groups, against one BN over the concatenated batch."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnviz.distributed import run_workers
from bnviz.sync_bn import SyncBatchNorm, convert_sync_batchnorm

pytestmark = pytest.mark.timeout(240)
C = 3


def _data(shape: tuple[int, ...], steps: int = 3):
    gen = torch.Generator().manual_seed(7)
    return [(torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 1,
             torch.randn(shape, generator=gen, dtype=torch.float64)) for _ in range(steps)]


def _set_affine(bn: nn.Module) -> None:
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))


def _sync_bn_steps(rank: int, world_size: int, report, batches, sizes):
    """Each process normalizes its rows of every batch (``sizes`` rows per rank); loss: the sum
    of y * probe over its rows."""
    bn = SyncBatchNorm(C).double()
    _set_affine(bn)
    start = sum(sizes[:rank])
    out = []
    for x, probe in batches:
        xs = x[start:start + sizes[rank]].clone().requires_grad_(True)
        bn.weight.grad = bn.bias.grad = None
        y = bn(xs)
        (y * probe[start:start + sizes[rank]]).sum().backward()
        out.append((y.detach(), xs.grad, bn.weight.grad.clone(), bn.bias.grad.clone(),
                    bn.running_mean.clone(), bn.running_var.clone()))
    bn.eval()
    out.append(bn(batches[0][0][start:start + sizes[rank]]).detach())
    return out


def _oracle(batches, shape):
    ref = (nn.BatchNorm1d if len(shape) < 4 else nn.BatchNorm2d)(C).double()
    _set_affine(ref)
    out = []
    for x, probe in batches:
        xr = x.clone().requires_grad_(True)
        ref.weight.grad = ref.bias.grad = None
        y = ref(xr)
        (y * probe).sum().backward()
        out.append((y.detach(), xr.grad, ref.weight.grad.clone(), ref.bias.grad.clone(),
                    ref.running_mean.clone(), ref.running_var.clone()))
    ref.eval()
    out.append(ref(batches[0][0]).detach())
    return out


@pytest.mark.parametrize("shape,sizes", [((8, C), (4, 4)), ((7, C, 3, 3), (5, 2))])
def test_two_processes_equal_one_batchnorm_on_the_concatenated_batch(shape, sizes):
    """Outputs and input gradients per row, gamma/beta gradients summed over processes, running
    statistics in every process and eval-mode outputs: those of torch's BN on all rows at once
    (per-device batches of unequal size included)."""
    batches = _data(shape)
    per_rank = run_workers(_sync_bn_steps, 2, (batches, sizes), timeout_s=120)
    expected = _oracle(batches, shape)
    for step, want in enumerate(expected[:-1]):
        got = [r[step] for r in per_rank]
        torch.testing.assert_close(torch.cat([g[0] for g in got]), want[0])            # outputs
        torch.testing.assert_close(torch.cat([g[1] for g in got]), want[1])            # input gradients
        torch.testing.assert_close(got[0][2] + got[1][2], want[2])                     # d gamma
        torch.testing.assert_close(got[0][3] + got[1][3], want[3])                     # d beta
        for g in got:
            torch.testing.assert_close(g[4], want[4])                                  # running mean
            torch.testing.assert_close(g[5], want[5])                                  # running var
    torch.testing.assert_close(torch.cat([r[-1] for r in per_rank]), expected[-1])


def test_one_process_is_plain_batchnorm():
    shape = (6, C)
    batches = _data(shape)
    (got,) = run_workers(_sync_bn_steps, 1, (batches, (6,)), timeout_s=120)
    expected = _oracle(batches, shape)
    for a, b in zip(got[:-1], expected[:-1]):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)
    torch.testing.assert_close(got[-1], expected[-1])


def _net() -> nn.Module:
    torch.manual_seed(0)  # the same initial weights in every process and in the oracle
    return nn.Sequential(nn.Linear(4, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()


def _ddp_steps(rank: int, world_size: int, report, x, y, per_device: int):
    model = convert_sync_batchnorm(_net())
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
    rows = slice(rank * per_device, (rank + 1) * per_device)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(ddp(x[rows]), y[rows]).backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_ddp_training_with_sync_bn_equals_training_on_the_global_batch():
    """Three SGD steps of a DDP model in 2 processes (cross-entropy averaged per process, DDP's
    gradient average) leave the weights and BN buffers of single-process training on the global
    batch, with torch's BatchNorm1d."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=gen)
    states = run_workers(_ddp_steps, 2, (x, y, 5), timeout_s=120)
    ref = _net()
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        opt.step()
    for state in states:
        assert state.keys() == ref.state_dict().keys()
        for k, v in ref.state_dict().items():
            torch.testing.assert_close(state[k], v, msg=k)


def test_without_a_process_group_sync_bn_is_plain_batchnorm():
    bn, ref = SyncBatchNorm(C).double(), nn.BatchNorm1d(C).double()
    x = torch.randn(5, C, dtype=torch.float64)
    torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_var, ref.running_var)


def test_convert_keeps_the_parameters_themselves():
    net = _net()
    weight = net[1].weight
    converted = convert_sync_batchnorm(net)
    assert isinstance(converted[1], SyncBatchNorm) and converted[1].weight is weight
    assert converted[1].running_mean is not None and isinstance(converted[0], nn.Linear)
