"""The tiny transformer and the transformer experiments against independent oracles: torch's
nn.TransformerEncoderLayer (norm_first True/False) with the weights copied, nn.LayerNorm and
nn.RMSNorm, DyT's closed form and finite differences, numpy on hooked tensors, np.sort."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnviz.config import Config
from bnviz.experiments import transformer as tr
from bnviz.norms import DyT
from bnviz.tiny_transformer import TransformerBlock, build_transformer, sorting_task


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_block_matches_torch_transformer_encoder_layer(norm_first, mode):
    ref = nn.TransformerEncoderLayer(16, 4, 24, dropout=0.0, activation="relu", batch_first=True, norm_first=norm_first)
    _randomize(ref)
    mine = TransformerBlock(16, 4, 24, "layernorm", norm_first)
    mine.load_state_dict(ref.state_dict())
    getattr(ref, mode)()
    getattr(mine, mode)()
    x = torch.randn(5, 7, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(mine(x), ref(x), rtol=1e-5, atol=1e-5)


def _torch_stack_loss(model, tokens, targets):
    """The same network computed with torch's own encoder layers (weights copied): a second
    implementation, for the gradients."""
    layers = []
    for block in model.blocks:
        ref = nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, activation="relu", batch_first=True,
                                         norm_first=block.norm_first)
        ref.load_state_dict(block.state_dict())
        layers.append(ref)
    x = model.embed(tokens) + model.position[: tokens.shape[1]]
    for ref in layers:
        x = ref(x)
    logits = model.head(model.final_norm(x)).transpose(1, 2)
    loss = F.cross_entropy(logits, targets)
    return torch.autograd.grad(loss, [ref.linear2.weight for ref in layers])


@pytest.mark.parametrize("variant", ["Post-LN", "Pre-LN"])
def test_gradients_at_init_match_torch_layers(variant):
    config = Config(seed=4, batch_size=16, lr=0.01, optimizer="adam")
    norms = tr.gradients_at_init(config, 3, [variant])[variant]
    model = tr.model_for(config, variant, 3)
    from bnviz.train import build_for
    _, _, stream = build_for(config, tr.task(config), model)
    tokens, targets = next(stream)
    model.train()
    grads = _torch_stack_loss(model, tokens, targets)
    np.testing.assert_allclose(norms, [g.norm().item() for g in grads], rtol=1e-4)


def test_numpy_norms_match_torch_layernorm_and_rmsnorm():
    v = np.random.default_rng(0).normal(size=(6, 10)) * 3 + 1
    t = torch.tensor(v)
    ln = nn.LayerNorm(10, eps=tr.EPS, elementwise_affine=False).double()
    rms = nn.RMSNorm(10, eps=tr.EPS, elementwise_affine=False).double()
    np.testing.assert_allclose(tr.layer_norm(v), ln(t).detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tr.rms_norm(v), rms(t).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_invariances_of_one_vector():
    moved = tr.one_vector(3.0, 2.0)
    assert moved.ln_change < 1e-4                    # shift and positive scale: gone
    assert moved.rms_change > 0.1                    # the shift is not
    scaled = tr.one_vector(0.0, 5.0)
    assert scaled.rms_change < 1e-4 and scaled.ln_change < 1e-4
    flipped = tr.one_vector(0.0, -1.0)
    np.testing.assert_allclose(flipped.ln_moved, -flipped.ln, atol=1e-9)


def test_dyt_closed_form_and_gradients():
    dyt = DyT(5).double()
    assert dyt.alpha.item() == 0.5
    with torch.no_grad():
        dyt.weight.copy_(torch.arange(1.0, 6.0))
        dyt.bias.copy_(torch.linspace(-1, 1, 5))
    x = torch.randn(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = np.tanh(0.5 * x.numpy()) * np.arange(1.0, 6.0) + np.linspace(-1, 1, 5)
    np.testing.assert_allclose(dyt(x).detach().numpy(), expected, rtol=1e-12)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda inp: dyt(inp), (x,))   # finite differences, input and parameters
    loss = dyt(x).pow(2).sum()
    loss.backward()
    eps = 1e-6
    with torch.no_grad():
        dyt.alpha += eps
        up = dyt(x).pow(2).sum().item()
        dyt.alpha -= 2 * eps
        down = dyt(x).pow(2).sum().item()
    assert dyt.alpha.grad.item() == pytest.approx((up - down) / (2 * eps), rel=1e-6)


def test_sorting_task_targets_are_the_sorted_inputs():
    data = sorting_task(n_train=50, n_test=10, length=6, vocab=7, seed=3)
    x = np.concatenate([data.x_train.numpy(), data.x_test.numpy()])
    y = np.concatenate([data.y_train.numpy(), data.y_test.numpy()])
    np.testing.assert_array_equal(y, np.sort(x, axis=1))
    assert x.min() >= 0 and x.max() <= 6 and data.n_classes == 7


def test_warmup_schedule():
    lr = tr.warmup_schedule(0.03, 60)
    assert lr(0) == pytest.approx(0.03 / 60) and lr(29) == pytest.approx(0.015) and lr(59) == lr(500) == 0.03


def test_scatter_is_layernorm_of_the_hooked_inputs():
    """x_hat of the recorded layers against numpy LayerNorm of the inputs seen by a separate hook."""
    model = build_transformer("Pre-LN", 10, 8, layers=2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-1, 1)
    seen = {}
    def keep(name):
        def hook(module, inputs, output):
            seen.setdefault(name, inputs[0].detach().clone())   # returns None: the output stays
        return hook
    handles = [m.register_forward_hook(keep(name)) for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)]
    tokens = sorting_task(n_train=16, n_test=1, seed=1).x_train
    with torch.no_grad():
        model.train()
        model(tokens)
    for h in handles:
        h.remove()
    scatters = tr.normalization_scatter(model, tokens, channels=8)
    assert [s.name for s in scatters] == list(seen)
    for s in scatters:
        x = seen[s.name].reshape(-1, 32).double().numpy()
        expected = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
        np.testing.assert_allclose(s.x, x[:, :8].ravel(), rtol=1e-6)
        np.testing.assert_allclose(s.x_hat, expected[:, :8].ravel(), rtol=1e-3, atol=1e-4)


def test_fit_tanh_recovers_a_dyt_curve():
    x = np.linspace(-4, 4, 400)
    alpha, gamma = tr.fit_tanh(x, 1.7 * np.tanh(0.8 * x))
    assert alpha == pytest.approx(0.8, rel=0.03) and gamma == pytest.approx(1.7, rel=0.03)


@pytest.mark.timeout(600)
def test_post_ln_needs_warm_up_pre_ln_does_not():
    """The page's claim at its defaults (3 blocks, Adam 0.03, 300 steps, 60 warm-up steps)."""
    config = Config(steps=300, lr=0.03, optimizer="adam", batch_size=64, eval_every=100)
    runs = tr.train_variants(config, 3, 60)
    acc = {label: run.curves.test_acc[-1] for label, run in runs.items()}
    assert acc["Post-LN, no warm-up"] < 0.3 < 0.8 < acc["Post-LN, warm-up"]
    assert acc["Pre-LN, no warm-up"] > 0.6


@pytest.mark.parametrize("norm,module", [("rmsnorm", lambda: nn.RMSNorm(16)), ("dyt", lambda: DyT(16))])
def test_pre_norm_blocks_with_rmsnorm_or_dyt_match_torch_layer_with_that_norm(norm, module):
    """torch's pre-norm encoder layer with its norms swapped for RMSNorm / DyT, weights copied."""
    ref = nn.TransformerEncoderLayer(16, 4, 24, dropout=0.0, activation="relu", batch_first=True, norm_first=True)
    ref.norm1, ref.norm2 = module(), module()
    _randomize(ref, seed=3)
    mine = TransformerBlock(16, 4, 24, norm, True)
    mine.load_state_dict(ref.state_dict())
    ref.train()
    mine.train()
    x = torch.randn(5, 7, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(mine(x), ref(x), rtol=1e-5, atol=1e-5)
