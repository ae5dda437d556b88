"""ResNets of bnviz.resnets and the residual experiment, against independent oracles:
hand-written forward passes with torch.nn.functional, numpy variances of the tensors themselves,
the closed forms of De & Smith (2020) by Monte-Carlo, and the identity at initialization."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnviz.config import Config
from bnviz.experiments import residual
from bnviz.resnets import STYLES, build_resnet


def _bn(x, m):
    """Training-mode BN from its definition: per channel, batch mean and biased variance."""
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (x - mean) / torch.sqrt(var + m.eps) * m.weight.view(shape) + m.bias.view(shape)


def _manual_block(block, x):
    """The block's forward written from the table in bnviz.resnets' docstring."""
    w = [m for m in block.branch if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    bns = [m for m in block.branch if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    lin = lambda m, z: F.conv2d(z, m.weight, m.bias, padding=1) if isinstance(m, torch.nn.Conv2d) else F.linear(z, m.weight, m.bias)  # noqa: E731
    if block.style == "post":
        b = _bn(lin(w[1], F.relu(_bn(lin(w[0], x), bns[0]))), bns[1])
        return F.relu(x + b)
    if block.style == "pre":
        return x + lin(w[1], F.relu(_bn(lin(w[0], F.relu(_bn(x, bns[0]))), bns[1])))
    if block.style == "fixup":
        s = [m.value for m in block.branch if not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ReLU))]
        b1, b2, b3, scale, b4 = s
        return F.relu(x + lin(w[1], F.relu(lin(w[0], x + b1) + b2) + b3) * scale + b4)
    b = lin(w[1], F.relu(lin(w[0], F.relu(x))))
    if block.style == "skipinit":
        b = b * block.branch[-1].value
    return x + b


def _perturb(model):
    """Non-trivial values for the parameters that start at 0 or 1, so every term matters."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("arch,shape", [("mlp", (12,)), ("cnn", (2, 5, 5))])
@pytest.mark.parametrize("style", STYLES)
def test_blocks_compute_what_the_docstring_says(style, arch, shape):
    model = build_resnet(style, shape, 3, arch=arch, width=6, n_blocks=2, generator=torch.Generator().manual_seed(1))
    _perturb(model)
    model.train()
    x = model.stem(torch.randn(7, *shape).flatten(1) if arch == "mlp" else torch.randn(7, *shape))
    for block in model.blocks:
        torch.testing.assert_close(block(x), _manual_block(block, x), rtol=1e-5, atol=1e-5)
        x = block(x)


@pytest.mark.parametrize("style,zero", [("skipinit", False), ("fixup", False), ("pre", True), ("post", True)])
def test_identity_at_initialization(style, zero):
    model = build_resnet(style, (10,), 4, width=8, n_blocks=3, zero_init=zero, generator=torch.Generator().manual_seed(0))
    x = torch.randn(16, 8)
    for block in model.blocks:
        expected = F.relu(x) if style in ("post", "fixup") else x
        torch.testing.assert_close(block(x), expected)


def test_fixup_scales_the_first_weight_and_zeroes_the_last():
    model = build_resnet("fixup", (256,), 4, width=256, n_blocks=16, generator=torch.Generator().manual_seed(0))
    first, last = model.blocks[3].weights()
    he = np.sqrt(2 / 256)
    assert abs(first.weight.std().item() / (he / 4) - 1) < 0.02      # L ** -0.5 = 1/4 for 16 blocks
    assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(model.classifier.weight) == 0


def test_recorded_variances_are_those_of_the_tensors():
    """The recorder's skip/branch variances against numpy on the tensors of a hand-run forward."""
    config = Config(width=16, seed=3)
    measured = residual.at_init(config, 3)
    data = residual.load(config)
    for label, (style, zero) in residual.variants(False).items():
        model = residual.model_for(config, data, style, zero, 3)
        _, _, stream = residual.build_for(config, data, model)
        x, _ = next(stream)
        model.train()
        with torch.no_grad():
            h = model.stem(x)
            skip, branch = [], []
            for block in model.blocks:
                skip.append(np.var(h.numpy().astype(np.float64)))
                branch.append(np.var(block.branch(h).numpy().astype(np.float64)))
                h = block(h)
        np.testing.assert_allclose(measured[label].skip, skip, rtol=1e-4)
        np.testing.assert_allclose(measured[label].branch, branch, rtol=1e-4, atol=1e-12)


def _skip_variances(style, seed, width=512, n=512, blocks=8):
    model = build_resnet(style, (width,), 2, width=width, n_blocks=blocks, generator=torch.Generator().manual_seed(seed))
    model.train()
    x = torch.randn(n, width, generator=torch.Generator().manual_seed(100 + seed))
    out = []
    with torch.no_grad():
        h = model.stem(x)
        for block in model.blocks:
            out.append(h.pow(2).mean().item())
            h = block(h)
    return np.array(out)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("style", ["pre", "none"])
def test_de_and_smith_laws_by_monte_carlo(style):
    """Mean square of the skip path per block, averaged over 4 wide networks, against the closed
    form from its first block: +1 per block with BN, x2 per block without normalization."""
    measured = np.mean([_skip_variances(style, s) for s in range(4)], axis=0)
    expected = residual.expected_skip(style, measured[0], len(measured))
    np.testing.assert_allclose(measured, expected, rtol=0.06)


@pytest.mark.timeout(300)
def test_training_records_every_planned_step_and_learns():
    config = Config(steps=60, width=16, lr=0.05, eval_every=20)
    runs = residual.train_all(config, 2)
    assert list(runs) == list(residual.VARIANTS)
    for run in runs.values():
        assert [r.step for r in run.recorded] == residual.recorded_steps(60)
        assert len(run.curves.loss) == 60
    assert runs["pre-activation BN"].curves.test_acc[-1] > 0.5
    # step 0 of training is the initialization the fast figure shows
    init = residual.at_init(config, 2)
    for label, run in runs.items():
        np.testing.assert_allclose(run.recorded[0].skip, init[label].skip, rtol=1e-5)
