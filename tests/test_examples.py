"""examples/watch_resnet.py, run as a user runs it: a subprocess in a folder of its own, then the
run it wrote read back with bnviz.open_run and checked by the BN doctor.

The two runs (healthy, and with frozen BN parameters) are made once for the module, side by side
with one torch thread each, and are short (30 steps, batch 16, a peak learning rate of 0.1 so the
loss visibly falls in that time: 2.39 -> 2.07 between the first and last 10 steps): enough for
the recorder, the store and the doctor, not for a trained model.
"""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bnviz
from bnviz import doctor

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "watch_resnet.py"
ARGS = ("--steps", "30", "--every", "10", "--batch-size", "16", "--lr", "0.1")
SMALL_NORMS = ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer2.0.bn1", "layer2.0.bn2", "layer2.0.downsample.1",
               "layer3.0.bn1", "layer3.0.bn2", "layer3.0.downsample.1"]


def _example():
    spec = importlib.util.spec_from_file_location("watch_resnet_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """fault -> (run folder, stdout) of the example, run from an empty working folder."""
    cwd = tmp_path_factory.mktemp("example-cwd")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = {fault: subprocess.Popen([sys.executable, str(SCRIPT), *ARGS, "--fault", fault,
                                      "--run-dir", f"runs/{fault}"],
                                     cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for fault in ("none", "frozen-bn")}
    out = {}
    for fault, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]
        out[fault] = (cwd / "runs" / fault, stdout)
    return out


@pytest.mark.slow
def test_example_writes_a_run_with_resnet_layer_names_and_a_falling_loss(runs):
    path, stdout = runs["none"]
    run = bnviz.open_run(path)
    assert run.status == "finished"
    assert run.norm_layers == SMALL_NORMS
    assert run.snapshot_steps.tolist() == [0, 10, 20]
    steps, loss = run.scalars("loss")
    assert steps.tolist() == list(range(30)) and np.isfinite(loss).all()
    assert loss[-10:].mean() < loss[:10].mean()                 # it trains
    _, acc = run.scalars("acc")
    assert ((acc >= 0) & (acc <= 1)).all()
    # holdout=(x_val, y_val): scored at every recorded step, in eval mode and with precise BN
    for name in ("holdout_acc", "holdout_precise_acc"):
        hs, values = run.scalars(name)
        assert hs.tolist() == [0, 10, 20] and np.isfinite(values).all()
    # every BN is recorded in training mode with the batch's statistics: 16 images x 32 x 32 at the stem
    assert run.layer_state("bn1")["count"].tolist() == [16 * 32 * 32] * 3
    assert run.layer_state("layer3.0.bn1")["count"].tolist() == [16 * 8 * 8] * 3
    # the end says how to look at the run
    assert "bnviz app --runs runs" in stdout and "bnviz doctor runs/none" in stdout


@pytest.mark.slow
def test_frozen_bn_fault_is_what_the_doctor_reports(runs):
    healthy = doctor.diagnose(bnviz.open_run(runs["none"][0]))
    frozen = doctor.diagnose(bnviz.open_run(runs["frozen-bn"][0]))
    assert not [f for f in healthy if f.check == "frozen_but_moving" and f.severity != "ok"]
    flagged = {f.layer for f in frozen if f.check == "frozen_but_moving" and f.severity == "problem"}
    assert flagged == set(SMALL_NORMS)                          # every BN was frozen and left in train()
    state = bnviz.open_run(runs["frozen-bn"][0]).layer_state("bn1")
    assert state["frozen"].all() and state["training"].all()
    assert not bnviz.open_run(runs["none"][0]).layer_state("bn1")["frozen"].any()


def test_resnet18_is_torchvisions_layout():
    """The example's ResNet-18 against torchvision's resnet18(num_classes=10) as published:
    11,181,642 parameters with its 7x7 stem, 11,173,962 with the 3x3 CIFAR stem used here
    (3*64*(49-9) fewer); its 20 BatchNorm2d layers under torchvision's names."""
    ex = _example()
    model = ex.resnet()
    assert sum(p.numel() for p in model.parameters()) == 11_181_642 - 3 * 64 * (49 - 9)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    expected = ["bn1"]
    for stage in range(1, 5):
        for block in range(2):
            expected += [f"layer{stage}.{block}.bn1", f"layer{stage}.{block}.bn2"]
            if stage > 1 and block == 0:
                expected.append(f"layer{stage}.0.downsample.1")
    assert names == expected
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    # a BasicBlock is conv-BN-ReLU, conv-BN, + shortcut, ReLU: checked against the same ops by hand
    block = ex.BasicBlock(4, 8, stride=2).eval()
    x = torch.randn(2, 4, 8, 8)
    ref = torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))) + block.downsample(x))
    assert torch.allclose(block(x), ref)


def test_gratings_are_reproducible_and_balanced():
    ex = _example()
    x, y = ex.gratings(2000, seed=5)
    x2, y2 = ex.gratings(2000, seed=5)
    assert x.shape == (2000, 3, 32, 32) and torch.equal(x, x2) and torch.equal(y, y2)
    counts = torch.bincount(y, minlength=10)
    assert counts.min() > 150 and math.isfinite(float(x.std()))
