"""Which values share statistics, against torch's own layers: nn.BatchNorm2d (training mode),
nn.LayerNorm([C, H, W]), nn.InstanceNorm2d and nn.GroupNorm normalize every entry of a tensor;
the set, mean, variance and normalized value of each entry must be what they compute. The
recorded tensor against an independent forward hook."""
import numpy as np
import pytest
import torch
from torch import nn

from bnviz.config import Config
from bnviz.experiments import shared_statistics as ss
from bnviz.train import train

SHAPE = (4, 6, 3, 5)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=SHAPE) * 2 + np.arange(6).reshape(1, 6, 1, 1)


def _torch(method, x, groups):
    t = torch.from_numpy(x)
    _, c, h, w = x.shape
    module = {"BatchNorm": nn.BatchNorm2d(c, affine=False, eps=ss.EPS).train(),
              "LayerNorm": nn.LayerNorm([c, h, w], elementwise_affine=False, eps=ss.EPS),
              "InstanceNorm": nn.InstanceNorm2d(c, eps=ss.EPS),
              "GroupNorm": nn.GroupNorm(groups, c, affine=False, eps=ss.EPS)}[method].double()
    with torch.no_grad():
        return module(t).numpy()


@pytest.mark.parametrize("method", ss.METHODS)
@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_every_entry_against_torch(x, method, groups):
    expected = _torch(method, x, groups)
    for entry in [(0, 0, 0, 0), (3, 5, 2, 4), (1, 2, 1, 3), (2, 4, 0, 1)]:
        s = ss.shared_statistics(x, entry, method, groups)
        assert s.normalized == pytest.approx(expected[entry], rel=1e-10, abs=1e-12)
        # every entry of the set is normalized by the same mean and variance: torch's outputs over
        # the set are (x - mean) / sqrt(var + eps) for those very numbers
        np.testing.assert_allclose(expected[s.mask], (x[s.mask] - s.mean) / np.sqrt(s.var + ss.EPS), rtol=1e-9)
        assert ss.torch_normalized(x, entry, method, groups) == pytest.approx(s.normalized, rel=1e-10, abs=1e-12)


def test_set_sizes_and_group_bounds(x):
    n, c, h, w = SHAPE
    sizes = {m: ss.shared_statistics(x, (1, 3, 2, 2), m, 3).count for m in ss.METHODS}
    assert sizes == {"BatchNorm": n * h * w, "LayerNorm": c * h * w, "InstanceNorm": h * w, "GroupNorm": 2 * h * w}
    mask = ss.shared_set(SHAPE, (1, 3, 2, 2), "GroupNorm", 3)
    assert mask[1, 2:4].all() and not mask[1, :2].any() and not mask[1, 4:].any() and not mask[0].any()
    with pytest.raises(ValueError, match="divides"):
        ss.shared_set(SHAPE, (0, 0, 0, 0), "GroupNorm", 4)
    assert ss.divisors(12) == [1, 2, 3, 4, 6, 12]
    assert ss.clamp_entry((9, -1, 2, 7), SHAPE) == (3, 0, 2, 4)


@pytest.mark.timeout(300)
def test_recorded_tensor_is_the_convolution_output():
    run = train(Config(arch="cnn", dataset="digits-image", steps=5, eval_every=5))
    images = run.dataset.x_test[:8]
    seen = {}

    def hook(module, inputs, output):
        seen["conv"] = output.detach().clone()

    handle = run.model.blocks[1].weight.register_forward_hook(hook)
    run.model.eval()
    with torch.no_grad():
        run.model(images)
    handle.remove()
    x = ss.activation_tensor(run.model, images, 1)
    assert x.shape == (8, 16, 4, 4)
    np.testing.assert_array_equal(x, seen["conv"].double().numpy())
    assert not run.model.training
