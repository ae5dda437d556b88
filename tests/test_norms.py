"""bnviz.norms against an independent oracle: torch.nn.BatchNorm1d / BatchNorm2d.

Every expected value comes from torch's own layers (or from torch.autograd.gradcheck's finite
differences); the only numbers written here are shapes, seeds and tolerances.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call
from torch.testing import assert_close

from bnviz.norms import NORM_KINDS, BatchNorm, groupnorm_groups, is_batchnorm, make_norm

C = 6
SHAPES = {"NC": (16, C), "NCL": (8, C, 5), "NCHW": (4, C, 3, 3)}
# float32: our two-pass statistics and torch's kernel differ only by rounding.
FWD = {"atol": 1e-6, "rtol": 1e-5}
GRAD = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def torch_cls(ndim: int) -> type[nn.Module]:
    return nn.BatchNorm2d if ndim == 4 else nn.BatchNorm1d


def make_pair(ndim: int, gen: torch.Generator, num_features: int = C, dtype=torch.float32, **kwargs):
    """Our BatchNorm and torch's, with the same random (non-default) gamma and beta."""
    ours = BatchNorm(num_features, dtype=dtype, **kwargs)
    ref = torch_cls(ndim)(num_features, dtype=dtype, **kwargs)
    if ours.weight is not None:
        with torch.no_grad():
            weight = torch.rand(num_features, generator=gen, dtype=dtype) + 0.5
            bias = torch.randn(num_features, generator=gen, dtype=dtype)
            for m in (ours, ref):
                m.weight.copy_(weight)
                m.bias.copy_(bias)
    return ours, ref


def batch(shape, gen, dtype=torch.float32) -> torch.Tensor:
    # Off-centre and wider than N(0, 1), so the mean and variance actually do something.
    return torch.randn(shape, generator=gen, dtype=dtype) * 3 + 2


def assert_same_state(ours: nn.Module, ref: nn.Module) -> None:
    a, b = ours.state_dict(), ref.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert_close(a[key], b[key], **FWD, msg=key)


# --- forward and backward ---------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_forward_matches_torch(shape, gen):
    ours, ref = make_pair(len(shape), gen)
    x = batch(shape, gen)
    assert_close(ours(x), ref(x), **FWD)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradients_match_torch(shape, training, gen):
    ours, ref = make_pair(len(shape), gen)
    if not training:
        for _ in range(3):  # non-trivial running statistics to normalize with
            x = batch(shape, gen)
            ours(x), ref(x)
        ours.eval(), ref.eval()
    x = batch(shape, gen)
    grad_out = torch.randn(shape, generator=gen)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    for m, xi in zip((ours, ref), xs):
        m(xi).backward(grad_out)
    assert_close(xs[0].grad, xs[1].grad, **GRAD)
    assert_close(ours.weight.grad, ref.weight.grad, **GRAD)
    assert_close(ours.bias.grad, ref.bias.grad, **GRAD)


def test_parameter_gradients_without_input_gradient(gen):
    # The first layer's input (raw data) does not require grad; gamma and beta still learn.
    ours, ref = make_pair(2, gen)
    x, grad_out = batch((16, C), gen), torch.randn(16, C, generator=gen)
    ours(x).backward(grad_out)
    ref(x).backward(grad_out)
    assert_close(ours.weight.grad, ref.weight.grad, **GRAD)
    assert_close(ours.bias.grad, ref.bias.grad, **GRAD)


def test_input_gradient_with_frozen_parameters(gen):
    ours, ref = make_pair(4, gen)
    for m in (ours, ref):
        m.requires_grad_(False)
    x = batch(SHAPES["NCHW"], gen)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    for m, xi in zip((ours, ref), xs):
        m(xi).pow(2).sum().backward()
    assert_close(xs[0].grad, xs[1].grad, **GRAD)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 9),
    c=st.integers(1, 5),
    spatial=st.sampled_from([(), (3,), (1,), (2, 3), (1, 1)]),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_shapes_match_torch(n, c, spatial, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (n, c, *spatial)
    ours, ref = make_pair(len(shape), gen, num_features=c)
    x = batch(shape, gen)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    grad_out = torch.randn(shape, generator=gen)
    outs = [m(xi) for m, xi in zip((ours, ref), xs)]
    assert_close(outs[0], outs[1], **FWD)
    for out in outs:
        out.backward(grad_out)
    assert_close(xs[0].grad, xs[1].grad, **GRAD)
    assert_close(ours.running_var, ref.running_var, **FWD)


# --- running statistics, eval mode ----------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, 0.9, None], ids=["m0.1", "m0.9", "cumulative"])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_running_statistics_and_eval(momentum, shape, gen):
    ours, ref = make_pair(len(shape), gen, momentum=momentum)
    for step in range(5):
        x = batch(shape, gen) * (step + 1)  # a drifting distribution, so the average matters
        ours(x).sum().backward()
        ref(x).sum().backward()
        assert_same_state(ours, ref)
    assert int(ours.num_batches_tracked) == 5
    ours.eval(), ref.eval()
    x = batch(shape, gen)
    assert_close(ours(x), ref(x), **FWD)
    # Eval mode reads the running statistics, it does not change them.
    assert_same_state(ours, ref)
    assert int(ours.num_batches_tracked) == 5


def test_running_statistics_update_under_no_grad(gen):
    # A forward pass without autograd (e.g. recalibrating statistics) still updates them.
    ours, ref = make_pair(2, gen)
    with torch.no_grad():
        for _ in range(3):
            x = batch((16, C), gen)
            assert_close(ours(x), ref(x), **FWD)
    assert_same_state(ours, ref)


def test_eval_batch_does_not_depend_on_other_samples(gen):
    ours, _ = make_pair(2, gen)
    for _ in range(3):
        ours(batch((16, C), gen))
    ours.eval()
    x = batch((16, C), gen)
    assert_close(ours(x)[:1], ours(x[:1]), **FWD)


def test_affine_false(gen):
    ours, ref = make_pair(4, gen, affine=False)
    assert ours.weight is None and ours.bias is None
    assert list(ours.parameters()) == []
    shape = SHAPES["NCHW"]
    for _ in range(2):
        x = batch(shape, gen)
        xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
        outs = [m(xi) for m, xi in zip((ours, ref), xs)]
        assert_close(outs[0], outs[1], **FWD)
        grad_out = torch.randn(shape, generator=gen)
        for out in outs:
            out.backward(grad_out)
        assert_close(xs[0].grad, xs[1].grad, **GRAD)
    assert_same_state(ours, ref)
    ours.eval(), ref.eval()
    x = batch(shape, gen)
    assert_close(ours(x), ref(x), **FWD)


@pytest.mark.parametrize("shape", [SHAPES["NC"], SHAPES["NCHW"]], ids=["NC", "NCHW"])
def test_track_running_stats_false(shape, gen):
    ours, ref = make_pair(len(shape), gen, track_running_stats=False)
    assert ours.running_mean is None and ours.running_var is None
    assert ours.num_batches_tracked is None
    assert set(ours.state_dict()) == set(ref.state_dict()) == {"weight", "bias"}
    x = batch(shape, gen)
    train_out = ours(x)
    assert_close(train_out, ref(x), **FWD)
    ours.eval(), ref.eval()
    # No running statistics to fall back on: eval mode normalizes with the batch's own.
    assert_close(ours(x), ref(x), **FWD)
    assert_close(ours(x), train_out, **FWD)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    grad_out = torch.randn(shape, generator=gen)
    for m, xi in zip((ours, ref), xs):
        m(xi).backward(grad_out)
    assert_close(xs[0].grad, xs[1].grad, **GRAD)


# --- state_dict interchange -----------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 4], ids=["1d", "2d"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("track", [True, False], ids=["track", "no-track"])
def test_state_dict_round_trip(ndim, affine, track, gen):
    shape = SHAPES["NC"] if ndim == 2 else SHAPES["NCHW"]
    kwargs = {"affine": affine, "track_running_stats": track}
    # ours -> torch
    ours, _ = make_pair(ndim, gen, **kwargs)
    for _ in range(3):
        ours(batch(shape, gen))
    fresh_ref = torch_cls(ndim)(C, **kwargs)
    fresh_ref.load_state_dict(ours.state_dict(), strict=True)
    assert_same_state(ours, fresh_ref)
    # torch -> ours
    _, ref = make_pair(ndim, gen, **kwargs)
    for _ in range(3):
        ref(batch(shape, gen))
    fresh_ours = BatchNorm(C, **kwargs)
    fresh_ours.load_state_dict(ref.state_dict(), strict=True)
    assert_same_state(fresh_ours, ref)
    # And the loaded layers compute the same thing as the originals, in both modes.
    x = batch(shape, gen)
    for pair in ((ours, fresh_ref), (fresh_ours, ref)):
        for m in pair:
            m.eval()
        assert_close(pair[0](x), pair[1](x), **FWD)
        for m in pair:
            m.train()
        assert_close(pair[0](x), pair[1](x), **FWD)
        assert_same_state(*pair)


def test_state_dict_without_num_batches_tracked_loads_like_torch(gen):
    # Checkpoints from before torch added num_batches_tracked (metadata version < 2).
    ref = nn.BatchNorm1d(C)
    ref(batch((16, C), gen))
    state = ref.state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1
    ours = BatchNorm(C)
    ours.load_state_dict(state, strict=True)
    assert_close(ours.running_mean, ref.running_mean)
    assert int(ours.num_batches_tracked) == 0


# --- gradcheck (float64) --------------------------------------------------------------------


def _as_function(module: BatchNorm):
    def f(x, weight, bias):
        return functional_call(module, {"weight": weight, "bias": bias}, (x,))
    return f


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 2, 2)], ids=["NC", "NCHW"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradcheck_float64(shape, training, gen):
    module, _ = make_pair(len(shape), gen, num_features=shape[1], dtype=torch.float64)
    if not training:
        module(batch(shape, gen, torch.float64))
        module.eval()
    inputs = (
        batch(shape, gen, torch.float64).requires_grad_(),
        module.weight.detach().clone().requires_grad_(),
        module.bias.detach().clone().requires_grad_(),
    )
    assert torch.autograd.gradcheck(_as_function(module), inputs)
    # Second derivatives (Hessian-vector products) go through the composite path.
    assert torch.autograd.gradgradcheck(_as_function(module), inputs)


def test_gradcheck_float64_affine_false(gen):
    module = BatchNorm(3, affine=False, dtype=torch.float64)
    x = batch((6, 3, 2), gen, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(module, (x,))
    assert torch.autograd.gradgradcheck(module, (x,))


# --- the errors a student meets -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, C), (1, C, 1), (1, C, 1, 1)], ids=["NC", "NCL", "NCHW"])
def test_batch_of_one_raises_in_training(shape, gen):
    ours, ref = make_pair(len(shape), gen)
    x = batch(shape, gen)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        ref(x)  # the oracle refuses too
    with pytest.raises(ValueError) as info:
        ours(x)
    message = str(info.value)
    assert "Expected more than 1 value per channel when training" in message
    for words in ("variance", "beta", "batch of 2 or more", "eval", "LayerNorm", "GroupNorm"):
        assert words in message
    # A rejected batch does not count as a tracked batch.
    assert int(ours.num_batches_tracked) == 0
    # A trained network predicts one sample at a time in eval mode, like torch.
    ours.eval(), ref.eval()
    assert_close(ours(x), ref(x), **FWD)


def test_batch_of_one_without_running_stats_raises_in_eval_too(gen):
    ours, ref = make_pair(2, gen, track_running_stats=False)
    ours.eval(), ref.eval()
    x = batch((1, C), gen)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        ref(x)
    with pytest.raises(ValueError, match="track_running_stats=False"):
        ours(x)


def test_batch_of_one_sample_with_several_positions_trains(gen):
    # One image still has H * W values per channel: statistics are defined.
    ours, ref = make_pair(4, gen)
    x = batch((1, C, 3, 3), gen)
    assert_close(ours(x), ref(x), **FWD)


def test_constant_feature_is_finite_and_matches_torch(gen):
    ours, ref = make_pair(2, gen)
    x = batch((16, C), gen)
    x[:, 2] = 0.7  # zero variance: only eps keeps 1 / sqrt(var + eps) finite
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outs = [m(xi) for m, xi in zip((ours, ref), xs)]
    grad_out = torch.randn(16, C, generator=gen)
    for out in outs:
        out.backward(grad_out)
    assert torch.isfinite(outs[0]).all() and torch.isfinite(xs[0].grad).all()
    assert torch.isfinite(ours.weight.grad).all()
    others = [c for c in range(C) if c != 2]
    assert_close(outs[0][:, others], outs[1][:, others], **FWD)
    # The exact answer for the constant feature is beta (x - mean = 0). In float32 the mean
    # of sixteen 0.7s is off by an ulp or so, in torch as in ours, and 1 / sqrt(eps) ~ 316
    # magnifies that; so both must be beta up to a few magnified ulps of 0.7.
    tol = 16 * 0.7 * torch.finfo(torch.float32).eps * float(ours.weight[2].detach()) / ours.eps**0.5
    for out in outs:
        assert_close(out[:, 2], ours.bias[2].detach().expand(16), atol=tol, rtol=0)
    assert_close(xs[0].grad, xs[1].grad, atol=tol, rtol=1e-5)


def test_constant_feature_float64_equals_torch(gen):
    # Without float32 rounding in the way, the constant feature agrees with torch exactly.
    ours, ref = make_pair(2, gen, dtype=torch.float64)
    x = batch((16, C), gen, torch.float64)
    x[:, 2] = 0.7
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outs = [m(xi) for m, xi in zip((ours, ref), xs)]
    assert_close(outs[0], outs[1], atol=1e-9, rtol=1e-9)
    grad_out = torch.randn(16, C, generator=gen, dtype=torch.float64)
    for out in outs:
        out.backward(grad_out)
    assert_close(xs[0].grad, xs[1].grad, atol=1e-9, rtol=1e-9)
    assert_close(ours.weight.grad, ref.weight.grad, atol=1e-9, rtol=1e-9)
    assert_close(ours.bias.grad, ref.bias.grad, atol=1e-9, rtol=1e-9)
    assert_same_state(ours, ref)


@pytest.mark.parametrize("eps", [1e-5, 1e-1])
def test_eps_matters_for_a_nearly_constant_feature(eps, gen):
    # Variance 1e-6, below the default eps: eps, not the data, sets the output's scale.
    ours, ref = make_pair(2, gen, eps=eps)
    x = batch((16, C), gen)
    x[:, 2] = torch.randn(16, generator=gen) * 1e-3
    out = ours(x)
    assert_close(out, ref(x), **FWD)
    x_hat = (out[:, 2] - ours.bias[2]) / ours.weight[2]
    expected_std = (x[:, 2].var(correction=0) / (x[:, 2].var(correction=0) + eps)) ** 0.5
    assert_close(x_hat.std(correction=0), expected_std, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4, 5, 6), ()], ids=["1D", "5D", "0D"])
def test_wrong_rank_raises(shape):
    with pytest.raises(ValueError, match="2D .* 3D .* 4D"):
        BatchNorm(3)(torch.zeros(shape))


def test_wrong_channel_count_raises():
    with pytest.raises(ValueError, match="built for 3 channels.* has 4 channels"):
        BatchNorm(3)(torch.zeros(8, 4))


def test_module_basics():
    m = BatchNorm(5, eps=1e-3, momentum=None)
    ref = nn.BatchNorm1d(5, eps=1e-3, momentum=None)
    assert repr(m) == "BatchNorm(5, eps=0.001, momentum=None, affine=True, track_running_stats=True)"
    assert m.extra_repr() in ref.extra_repr().replace("bias=True, ", "")
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in m.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert m.num_batches_tracked.dtype == torch.long
    assert_close(m.weight, ref.weight)
    assert_close(m.bias, ref.bias)


# --- factory --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, spatial, expected",
    [
        ("batchnorm", False, nn.BatchNorm1d),
        ("batchnorm", True, nn.BatchNorm2d),
        ("reference", False, BatchNorm),
        ("reference", True, BatchNorm),
        ("layernorm", False, nn.LayerNorm),
        ("layernorm", True, nn.GroupNorm),
        ("groupnorm", False, nn.GroupNorm),
        ("groupnorm", True, nn.GroupNorm),
    ],
)
def test_make_norm_types(kind, spatial, expected, gen):
    layer = make_norm(kind, 12, spatial=spatial, momentum=0.3, eps=1e-4)
    assert type(layer) is expected
    assert layer.eps == 1e-4
    assert is_batchnorm(layer) == (kind in ("batchnorm", "reference"))
    if is_batchnorm(layer):
        assert layer.momentum == 0.3
    # Every layer takes the activations it is made for and keeps their shape.
    x = batch((4, 12, 3, 3) if spatial else (4, 12), gen)
    assert layer(x).shape == x.shape


def test_make_norm_none_and_kinds():
    assert make_norm("none", 8) is None
    assert make_norm("none", 8, spatial=True) is None
    assert NORM_KINDS == ("batchnorm", "reference", "layernorm", "groupnorm", "none")
    for kind in NORM_KINDS:
        make_norm(kind, 8)  # every advertised kind is buildable


def test_make_norm_unknown_kind_lists_kinds():
    with pytest.raises(ValueError) as info:
        make_norm("batch_norm", 8)
    for kind in NORM_KINDS:
        assert kind in str(info.value)


def test_make_norm_cumulative_momentum():
    assert make_norm("reference", 4, momentum=None).momentum is None
    assert make_norm("batchnorm", 4, momentum=None).momentum is None


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 32, 48, 64, 96, 100, 128, 512])
def test_groupnorm_group_count(channels):
    layer = make_norm("groupnorm", channels, spatial=True)
    groups = layer.num_groups
    assert groups == groupnorm_groups(channels)
    assert channels % groups == 0
    assert groups in (32, 16, 8, 4, 2, 1)
    if channels >= 2:
        assert channels // groups >= 2
    # No larger allowed count would also divide and keep 2+ channels per group.
    for larger in (32, 16, 8, 4, 2):
        if larger > groups:
            assert channels % larger or channels // larger < 2


def test_layernorm_spatial_equals_layernorm_over_chw(gen):
    x = batch((4, 5, 3, 3), gen)
    layer = make_norm("layernorm", 5, spatial=True)
    oracle = nn.LayerNorm([5, 3, 3])  # default affine at init: weight 1, bias 0
    assert_close(layer(x), oracle(x), **FWD)


def test_layernorm_flat_normalizes_each_sample(gen):
    x = batch((4, 7), gen)
    assert_close(make_norm("layernorm", 7)(x), nn.LayerNorm(7)(x), **FWD)


def test_is_batchnorm():
    assert is_batchnorm(BatchNorm(3))
    assert is_batchnorm(nn.BatchNorm1d(3)) and is_batchnorm(nn.BatchNorm2d(3))
    assert is_batchnorm(nn.BatchNorm3d(3)) and is_batchnorm(nn.SyncBatchNorm(3))
    for other in (nn.LayerNorm(3), nn.GroupNorm(1, 3), nn.InstanceNorm1d(3), nn.Linear(3, 3), None):
        assert not is_batchnorm(other)
