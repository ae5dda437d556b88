"""The affine setting and the "no normalization" placement, against torch's own modules."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnviz.config import Config
from bnviz.figures import relu as relu_figs
from bnviz.models import build
from bnviz.norms import BatchNorm, make_norm
from bnviz.train import train


@pytest.mark.parametrize("kind, spatial", [("batchnorm", False), ("batchnorm", True), ("reference", False),
                                           ("layernorm", False), ("layernorm", True), ("groupnorm", False)])
def test_affine_false_has_no_gamma_beta_and_only_standardizes(kind, spatial):
    norm = make_norm(kind, 8, spatial=spatial, affine=False)
    assert not list(norm.parameters())
    x = torch.randn(16, 8, 5, 5) if spatial else torch.randn(16, 8)
    norm.train()
    y = norm(x)
    if kind in ("batchnorm", "reference"):
        want = F.batch_norm(x, None, None, training=True, eps=norm.eps)
    elif kind == "layernorm" and not spatial:
        want = F.layer_norm(x, (8,), eps=norm.eps)
    else:
        want = F.group_norm(x, norm.num_groups, eps=norm.eps)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


def test_reference_bn_without_affine_matches_torch_including_running_stats():
    ours, theirs = BatchNorm(6, affine=False), nn.BatchNorm1d(6, affine=False)
    for _ in range(3):
        x = torch.randn(20, 6) * 3 + 1
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var)


@pytest.mark.timeout(120)
def test_affine_false_trains_and_the_gamma_beta_figure_says_there_are_none():
    run = train(Config(steps=40, affine=False))
    assert all(m.weight is None and m.bias is None for _, m in run.model.batchnorms())
    last = run.history.snapshots[-1]
    assert all(ns.weight is None and ns.bias is None for ns in last.norms.values())
    fig = relu_figs.gamma_beta_over_training(run.history)
    assert not fig.data and "affine=False" in fig.layout.annotations[-1].text


@pytest.mark.timeout(120)
def test_placement_none_is_the_network_without_normalization():
    """placement "none" builds the very network norm "none" builds, whatever the norm says."""
    a = build(Config(placement="none", norm="batchnorm"), (64,), 10)
    b = build(Config(norm="none"), (64,), 10)
    assert not Config(placement="none").has_norm
    assert not any(isinstance(m, (nn.BatchNorm1d, BatchNorm, nn.LayerNorm, nn.GroupNorm)) for m in a.modules())
    assert [k for k in a.state_dict()] == [k for k in b.state_dict()]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    ra, rb = train(Config(steps=30, placement="none")), train(Config(steps=30, norm="none"))
    assert ra.history.losses.items == rb.history.losses.items
