"""Scale invariance of weights in front of BN, against autograd; the weight-norm recurrences of SGD
with and without weight decay, against the recorded gradients."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnviz.config import Config
from bnviz.data import load
from bnviz.experiments import weight_decay as wd
from bnviz.train import build_for

pytestmark = pytest.mark.timeout(300)
CONFIG = Config(steps=80, width=32, depth=2, batch_size=32, lr=0.1, eval_every=40)


def _model_and_batch(config: Config = CONFIG):
    data = load(config)
    model, _, stream = build_for(config, data)
    return model, *next(stream)


@pytest.mark.parametrize("k,tol", [(10.0, 1e-3), (100.0, 1e-3)])
def test_x_k_weights_same_outputs_and_gradient_over_k(k, tol):
    """Against autograd here: the logits of the network with the first layer's W times k equal the
    original's and dL/d(kW) = dL/dW / k, up to BN's eps: var + eps against k^2 var + eps, a
    relative effect of about eps / var (k < 1 makes it larger: shrunk weights, tiny variances)."""
    model, x, y = _model_and_batch()
    check = wd.scale_check(model, x, y, k)
    net = model.double().train()
    w = net.blocks[0].weight.weight
    logits = net(x.double())
    (g,) = torch.autograd.grad(F.cross_entropy(logits, y), w)
    with torch.no_grad():
        w.mul_(k)
    logits_k = net(x.double())
    (gk,) = torch.autograd.grad(F.cross_entropy(logits_k, y), w)
    assert check.layer == "layer 1"
    assert (logits_k - logits).abs().max().item() < tol * logits.abs().max().item()
    assert check.max_output_change < tol * check.max_logit
    assert check.grad_norm == pytest.approx(g.norm().item(), rel=1e-9)
    assert check.grad_norm_scaled == pytest.approx(gk.norm().item(), rel=1e-9)
    assert check.grad_ratio == pytest.approx(1 / k, rel=tol)
    torch.testing.assert_close(gk * k, g, rtol=tol, atol=tol * g.abs().max().item())


def test_gradient_is_orthogonal_to_scale_invariant_weights():
    model, x, y = _model_and_batch()
    loss = F.cross_entropy(model.double().train()(x.double()), y)
    weights = [w for _, w in wd.scale_invariant_weights(model)]
    assert len(weights) == 2
    for w, g in zip(weights, torch.autograd.grad(loss, weights)):
        assert abs((w * g).sum().item()) < 1e-4 * w.norm().item() * g.norm().item()


@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_norm_recurrence_of_sgd(decay):
    """||W_{t+1}||^2 = (1 - lr lambda)^2 ||W_t||^2 + lr^2 ||g_t||^2 at every step, each layer."""
    run = wd.train_norms(CONFIG.replace(weight_decay=decay))
    n, g = run.norms.astype(np.float64), run.grad_norms.astype(np.float64)
    assert n.shape == (CONFIG.steps + 1, 2) and g.shape == (CONFIG.steps, 2)
    predicted = (1 - CONFIG.lr * decay) ** 2 * n[:-1] ** 2 + CONFIG.lr ** 2 * g ** 2
    np.testing.assert_allclose(n[1:] ** 2, predicted, rtol=2e-4)
    np.testing.assert_allclose(run.effective_lr, CONFIG.lr / n ** 2, rtol=1e-6)
    if decay == 0:
        assert np.all(np.diff(n, axis=0) > -1e-4)        # plain SGD never shrinks them


def test_weight_decay_shrinks_norms_and_raises_the_effective_lr():
    plain, decayed = wd.compare(CONFIG.replace(steps=200), 0.05)
    assert plain.weight_decay == 0 and decayed.weight_decay == 0.05
    assert np.all(decayed.norms[-1] < plain.norms[-1])
    assert np.all(decayed.effective_lr[-1] > plain.effective_lr[-1])


@pytest.mark.parametrize("changes", [dict(placement="after"), dict(norm="layernorm"), dict(norm="none")])
def test_only_weights_right_before_bn_are_scale_invariant(changes):
    model, x, y = _model_and_batch(CONFIG.replace(**changes))
    assert wd.scale_invariant_weights(model) == []
    with pytest.raises(ValueError, match="followed directly by BatchNorm"):
        wd.scale_check(model, x, y)
