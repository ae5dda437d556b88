"""bnviz.optim against torch.optim itself: the same weights after many steps, bit for bit."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bnviz import optim
from bnviz.config import Config
from bnviz.data import load
from bnviz.models import build, loss_fn
from bnviz.train import _endless_batches

ROOT = Path(__file__).resolve().parents[1]


def _train(config: Config, make, steps: int = 60) -> list[torch.Tensor]:
    torch.set_num_threads(1)
    data = load(config)
    model = build(config, tuple(data.x_train.shape[1:]), data.n_classes, torch.Generator().manual_seed(config.seed))
    opt = make(model.parameters())
    stream = _endless_batches(data, config.batch_size, torch.Generator().manual_seed(config.seed + 1))
    model.train()
    for _ in range(steps):
        x, y = next(stream)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


CASES = [
    ("sgd", Config(optimizer="sgd", lr=0.1), 0.0),
    ("sgd", Config(optimizer="sgd", lr=0.05, norm="none", activation="tanh"), 1e-3),
    ("adam", Config(optimizer="adam", lr=0.003), 0.0),
    ("adam", Config(optimizer="adam", lr=0.001, arch="cnn", dataset="digits-image"), 1e-2),
]


@pytest.mark.parametrize("kind,config,weight_decay", CASES)
def test_same_weights_as_torch_optim(kind, config, weight_decay):
    config = config.replace(weight_decay=weight_decay)
    ours_cls = {"sgd": optim.Sgd, "adam": optim.Adam}[kind]
    torch_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[kind]
    ours = _train(config, lambda ps: ours_cls(ps, lr=config.lr, weight_decay=weight_decay))
    want = _train(config, lambda ps: torch_cls(ps, lr=config.lr, weight_decay=weight_decay))
    initial = _train(config, lambda ps: ours_cls(ps, lr=config.lr), steps=0)
    assert any(not torch.equal(a, b) for a, b in zip(ours, initial)), "the weights never moved"
    for a, b in zip(ours, want):
        assert torch.equal(a, b)


def test_zero_grad_clears_or_zeroes():
    p = torch.nn.Parameter(torch.ones(3))
    opt = optim.Sgd([p], lr=0.1)
    p.grad = torch.full((3,), 2.0)
    opt.zero_grad(set_to_none=False)
    assert torch.equal(p.grad, torch.zeros(3))
    opt.zero_grad()
    assert p.grad is None
    opt.step()  # no gradient: nothing to do, nothing moves
    assert torch.equal(p.detach(), torch.ones(3))


def test_training_does_not_import_torch_dynamo():
    # The reason bnviz.optim exists: the first chart of a new server must not pay ~2 s for it.
    code = ("import sys, torch; from bnviz.config import Config; from bnviz.train import train; "
            "train(Config(steps=20)); train(Config(steps=20, optimizer='adam')); print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
