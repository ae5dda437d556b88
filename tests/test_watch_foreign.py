"""bnviz.watch, bnviz.open_run and the BN doctor on models and training loops bnviz did not write,
with inputs nobody chose for it.

Every recorded number is checked against an oracle written here: plain forward hooks on the
modules (every call, with the root module's mode, in :class:`Spy`), the modules' own buffers and
parameters, and numpy/float64 arithmetic; training with and without watching is compared bit for
bit. Design choices tested here (documented in ``bnviz.watch``'s docstring): step ``s`` is the
first training-mode forward after ``s`` optimizer steps, each layer recorded at its first call in
it (shared layers, gradient accumulation, a GAN's discriminator).
"""
from __future__ import annotations

import copy
import io
import math
import re
import shutil
import sqlite3
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnviz
from bnviz import cli, doctor
from bnviz.store import RUN_FILE, RunFileError

torch.set_num_threads(1)

# The contract's normalization layers, by torch's own types (not bnviz.recorder's list).
BATCH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
         nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d)
INSTANCE = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
            nn.LazyInstanceNorm1d, nn.LazyInstanceNorm2d, nn.LazyInstanceNorm3d)
NORMS = BATCH + INSTANCE + (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
UNBATCHED_DIM = {nn.InstanceNorm1d: 2, nn.InstanceNorm2d: 3, nn.InstanceNorm3d: 4}


def norm_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, NORMS)]


class Spy:
    """Every call of the named modules, by plain forward hooks: the optimizer step it came
    after (``step``, advanced by :meth:`next`), whether the root module was in training mode, a
    copy of the input, and copies of the buffers and parameters right after the call."""

    def __init__(self, root: nn.Module, names: list[str]):
        self.root, self.step, self.calls = root, 0, {n: [] for n in names}
        modules = dict(root.named_modules())
        self.handles = [modules[n].register_forward_hook(self._hook(n, modules[n])) for n in names]

    def _hook(self, name, target):
        def hook(module, inputs, output):
            if module is not target:                     # a deep copy of the model carries the hook along
                return
            self.calls[name].append({
                "step": self.step, "training": self.root.training, "x": inputs[0].detach().clone(),
                "buffers": {k: v.detach().clone() for k, v in module.named_buffers()},
                "params": {k: v.detach().clone() for k, v in module.named_parameters()}})
        return hook

    def next(self) -> None:
        self.step += 1

    def first(self, name: str, step: int) -> dict:
        """The layer's first call in a training-mode forward after ``step`` optimizer steps."""
        return next(c for c in self.calls[name] if c["step"] == step and c["training"])

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def oracle(module: nn.Module, x: torch.Tensor) -> dict:
    """Per-channel mean and biased variance of ``x`` in float64, the values one statistic covers
    and the batch size, as the contract defines them for ``module``'s kind."""
    x = x.double()
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        shape = tuple(module.normalized_shape)
        lead = x.reshape(-1, *shape)                     # channels: the first normalized axis
        axes = (0, *range(2, lead.dim()))
        return {"mean": lead.mean(axes), "var": lead.var(axes, unbiased=False), "count": math.prod(shape),
                "samples": x.shape[0] if x.dim() > 1 else 1}
    if isinstance(module, INSTANCE) and x.dim() == UNBATCHED_DIM.get(type(module)):
        x = x[None]                                      # one unbatched sample (C, L)
    axes = (0, *range(2, x.dim()))
    rest = math.prod(x.shape[2:])
    if isinstance(module, BATCH):
        count = x.shape[0] * rest
    elif isinstance(module, nn.GroupNorm):
        count = x.shape[1] // module.num_groups * rest
    else:
        count = rest
    return {"mean": x.mean(axes), "var": x.var(axes, unbiased=False), "count": count, "samples": x.shape[0]}


def per_channel_param(p: torch.Tensor) -> np.ndarray:
    return (p.double() if p.dim() == 1 else p.double().reshape(p.shape[0], -1).mean(1)).numpy()


def assert_recorded_as_spied(run, spy: Spy, model: nn.Module, steps: list[int], names: list[str] | None = None,
                             rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """What the run holds for each norm layer at each recorded step against the spy's first call."""
    modules = dict(model.named_modules())
    for name in names or run.norm_layers:
        module = modules[name]
        got_steps, mean, var = run.batch_stats(name)
        assert got_steps.tolist() == steps, (name, got_steps)
        _, rmean, rvar = run.running_stats(name)
        _, weight, bias = run.params(name)
        state = run.layer_state(name)
        for i, s in enumerate(steps):
            call = spy.first(name, s)
            want = oracle(module, call["x"])
            np.testing.assert_allclose(mean[i], want["mean"].numpy(), rtol=rtol, atol=atol, err_msg=f"{name} @ {s}")
            np.testing.assert_allclose(var[i], want["var"].numpy(), rtol=rtol, atol=atol, err_msg=f"{name} @ {s}")
            assert state["count"][i] == want["count"] and state["samples"][i] == want["samples"], name
            assert bool(state["training"][i]) == module.training
            buffers, params = call["buffers"], call["params"]
            if "running_mean" in buffers:                # the buffers right after the call, as stored: float32
                np.testing.assert_array_equal(rmean[i], buffers["running_mean"].float().numpy())
                np.testing.assert_array_equal(rvar[i], buffers["running_var"].float().numpy())
            else:
                assert np.isnan(rmean[i]).all() and np.isnan(rvar[i]).all()
            for got, key in ((weight, "weight"), (bias, "bias")):
                if key in params:
                    np.testing.assert_allclose(got[i], per_channel_param(params[key]), rtol=1e-6, atol=1e-7)
                else:
                    assert np.isnan(got[i]).all()


def assert_doctor_reads_it(run) -> list:
    """The doctor runs every check on every norm layer without failing to read any."""
    findings = doctor.diagnose(run)
    assert len(findings) == 6 * len(run.norm_layers)
    assert not [f for f in findings if f.title == "could not be checked"], [f.evidence for f in findings]
    return findings


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return cli.main(list(args), err, out=out), out.getvalue(), err.getvalue()


# ----- models ------------------------------------------------------------------------------------
class Containers(nn.Module):
    """Norm layers inside a ModuleDict, a ModuleList and Sequentials nested in them."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8)), nn.ReLU())
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.GELU()) for _ in range(2)])
        self.heads = nn.ModuleDict({"a": nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4, affine=False)),
                                    "b": nn.Sequential(nn.Linear(8, 4), nn.GroupNorm(2, 4))})

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.heads["a"](h) + self.heads["b"](h)


class FrozenBN(nn.Module):
    """A conv net whose BN is frozen (eval mode, no gradients) while the rest trains."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6).requires_grad_(False)
        self.head = nn.Linear(6, 3)

    def train(self, mode: bool = True):
        super().train(mode)
        self.bn.eval()                                   # frozen: eval mode whatever the model's
        return self

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


class Autocast(nn.Module):
    """Forward under CPU autocast in bfloat16: the norm layers see bfloat16 inputs."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                 nn.Conv2d(6, 6, 1), nn.GroupNorm(3, 6), nn.SiLU())
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.head(self.net(x).mean((2, 3)))


def _conv(norm: nn.Module, cin: int = 3, c: int = 6) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, c, 3, padding=1), norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(c, 3))


def _images(n=6, c=3, hw=6):
    return lambda g: torch.randn(n, c, hw, hw, generator=g) * 2 + 1


# name -> (build the model, make one input from a generator, dtype of the input)
CASES = {
    "bn1d_on_NC": (lambda: nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)),
                   lambda g: torch.randn(12, 5, generator=g) * 2 + 1),
    "bn1d_on_NCL": (lambda: nn.Sequential(nn.Conv1d(3, 6, 3), nn.BatchNorm1d(6), nn.ReLU(), nn.Flatten(),
                                          nn.Linear(6 * 8, 3)),
                    lambda g: torch.randn(5, 3, 10, generator=g) + 1),
    "bn3d": (lambda: nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                                   nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 3)),
             lambda g: torch.randn(3, 2, 4, 4, 4, generator=g) * 2 + 1),
    "bn_no_running_stats_cumulative_no_affine": (
        lambda: nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6, track_running_stats=False), nn.ReLU(),
                              nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6, momentum=None), nn.ReLU(),
                              nn.Conv2d(6, 6, 1), nn.BatchNorm2d(6, affine=False), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(6, 3)),
        _images()),
    "lazy_bn_uninitialized": (lambda: nn.Sequential(nn.LazyConv2d(6, 3), nn.LazyBatchNorm2d(), nn.ReLU(),
                                                    nn.Flatten(), nn.LazyLinear(3)), _images()),
    "sync_bn_single_process": (lambda: _conv(nn.SyncBatchNorm(6)), _images()),
    "group_and_instance_norm": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                              nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(4, 8, affine=False), nn.ReLU(),
                              nn.Conv2d(8, 8, 1), nn.InstanceNorm2d(8), nn.ReLU(),
                              nn.Conv2d(8, 8, 1), nn.InstanceNorm2d(8, affine=True, track_running_stats=True),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)),
        _images()),
    "layer_and_rms_norm_on_sequences": (
        lambda: nn.Sequential(nn.Linear(10, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 16),
                              nn.LayerNorm(16, elementwise_affine=False), nn.RMSNorm(16), nn.Linear(16, 16),
                              nn.RMSNorm(16, elementwise_affine=False), nn.LayerNorm(16, bias=False), nn.Linear(16, 3)),
        lambda g: torch.randn(4, 7, 10, generator=g) * 2 + 1),
    "layer_and_rms_norm_over_several_axes": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LayerNorm([4, 6, 6]), nn.ReLU(),
                              nn.Conv2d(4, 4, 1), nn.RMSNorm([6, 6]), nn.Flatten(), nn.Linear(4 * 36, 3)),
        _images()),
    "instance_norm_on_one_unbatched_sample": (
        lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.InstanceNorm1d(4, affine=True, track_running_stats=True),
                              nn.ReLU(), nn.Conv1d(4, 3, 1)),
        lambda g: torch.randn(3, 12, generator=g) * 2 + 1),
    "module_dict_list_nested_sequential": (Containers, lambda g: torch.randn(10, 5, generator=g) + 1),
    "frozen_bn_in_eval_mode": (FrozenBN, _images()),
    "autocast_bfloat16": (Autocast, _images()),
    "channels_last": (lambda: _conv(nn.BatchNorm2d(6)).to(memory_format=torch.channels_last),
                      lambda g: (torch.randn(6, 3, 6, 6, generator=g) * 2 + 1).to(memory_format=torch.channels_last)),
    "float64": (lambda: nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.Flatten(), nn.Linear(6 * 36, 8), nn.LayerNorm(8), nn.Linear(8, 3)).double(),
                lambda g: (torch.randn(6, 3, 6, 6, generator=g) * 2 + 1).double()),
}
EXPECTED_NAMES = {
    "module_dict_list_nested_sequential": ["stem.0.1", "blocks.0.1", "blocks.1.1", "heads.a.1", "heads.b.1"],
    "frozen_bn_in_eval_mode": ["bn"],
    "autocast_bfloat16": ["net.1", "net.4"],
}


def _loss(out: torch.Tensor) -> torch.Tensor:
    return (out.float() - 0.3).pow(2).mean()


def train(model: nn.Module, inputs: list[torch.Tensor], w=None, spy: Spy | None = None) -> list[float]:
    """A plain loop; the optimizer is made after the first forward (lazy modules have no
    parameters before it)."""
    model.train()
    opt, losses = None, []
    for x in inputs:
        loss = _loss(model(x))
        if opt is None:
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if w is not None:
            w.step(loss=loss.item())
        if spy is not None:
            spy.next()
    return losses


@pytest.mark.parametrize("case", list(CASES))
def test_foreign_models_are_recorded_as_independent_hooks_see_them_and_train_the_same(tmp_path, case):
    build, make = CASES[case]
    g = torch.Generator().manual_seed(1)
    inputs = [make(g) for _ in range(5)]

    torch.manual_seed(0)
    plain = build()
    plain_losses = train(plain, inputs)

    torch.manual_seed(0)
    model = build()
    names = norm_names(model)
    spy = Spy(model, names)
    with bnviz.watch(model, tmp_path / "run", every=2) as w:
        losses = train(model, inputs, w, spy)
    spy.close()
    assert losses == plain_losses                                    # bit for bit
    for a, b in zip(plain.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())

    run = bnviz.open_run(tmp_path / "run")
    assert run.status == "finished"
    assert run.norm_layers == names and names == EXPECTED_NAMES.get(case, names)
    modules = dict(model.named_modules())
    for info in run.layers:                                          # read after the lazy modules' first forward
        m = modules[info.name]
        assert info.channels == oracle(m, spy.first(info.name, 0)["x"])["mean"].numel()
        assert info.affine == (getattr(m, "weight", None) is not None)
        assert info.tracks_running_stats == (getattr(m, "running_mean", None) is not None)
    tol = {"autocast_bfloat16": dict(rtol=2e-3, atol=2e-3)}.get(case, {})
    assert_recorded_as_spied(run, spy, model, [0, 2, 4], **tol)
    steps, values = run.scalars("loss")
    assert steps.tolist() == [0, 1, 2, 3, 4] and values.tolist() == losses
    assert run.history().layer_names == names
    assert_doctor_reads_it(run)


def test_frozen_bn_in_eval_mode_is_recorded_as_such_and_not_called_frozen_but_moving(tmp_path):
    torch.manual_seed(0)
    model = FrozenBN()
    g = torch.Generator().manual_seed(2)
    with bnviz.watch(model, tmp_path / "run", every=1) as w:
        train(model, [_images()(g) for _ in range(4)], w)
    run = bnviz.open_run(tmp_path / "run")
    state = run.layer_state("bn")
    assert not state["training"].any() and state["frozen"].all()
    _, rmean, rvar = run.running_stats("bn")
    assert (rmean == 0).all() and (rvar == 1).all()                  # eval mode: never updated
    by_check = {f.check: f for f in assert_doctor_reads_it(run)}
    assert by_check["frozen_but_moving"].severity == "ok"
    assert by_check["few_values"].severity == "ok"                   # no batch statistics used at all


# ----- a layer called more than once per step ----------------------------------------------------
def _mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.BatchNorm1d(8))


def plain_and_watched(make, run_loop, names: list[str], run_dir: Path, every: int):
    """``run_loop(model)`` on a model from ``make``, bare, then ``run_loop(model, w, spy)`` on
    another made from the same seed, watched, with a :class:`Spy` on ``names``: (the bare
    result, the watched result, the watched model, the spy)."""
    torch.manual_seed(0)
    plain = run_loop(make())
    torch.manual_seed(0)
    model = make()
    spy = Spy(model, names)
    with bnviz.watch(model, run_dir, every=every) as w:
        watched = run_loop(model, w, spy)
    spy.close()
    return plain, watched, model, spy


def test_a_layer_used_twice_in_one_forward_is_recorded_at_its_first_use(tmp_path):
    """A siamese net: one encoder (its BNs) applied to two batches of different distributions in
    one forward. Recorded: the first use's batch statistics and the buffers right after it."""
    class Siamese(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = _mlp()

        def forward(self, a, b):
            return (self.f(a) - self.f(b)).pow(2).mean()

    g = torch.Generator().manual_seed(3)
    pairs = [(torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g) * 3 + 5) for _ in range(5)]

    def run_loop(model, w=None, spy=None):
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        losses = []
        for a, b in pairs:
            loss = model(a, b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if w is not None:
                w.step(loss=loss)
                spy.next()
        return losses

    plain, losses, model, hooks = plain_and_watched(Siamese, run_loop, ["f.1", "f.4"], tmp_path / "siamese", 2)
    assert losses == plain
    run = bnviz.open_run(tmp_path / "siamese")
    assert run.norm_layers == ["f.1", "f.4"]
    assert_recorded_as_spied(run, hooks, model, [0, 2, 4])
    # the first use really is told apart from the second: the two batches differ by ~5
    _, mean, _ = run.batch_stats("f.1")
    second = [next(c for c in hooks.calls["f.1"] if c["step"] == s and c is not hooks.first("f.1", s))
              for s in (0, 2, 4)]
    assert not np.allclose(mean, [oracle(model.f[1], c["x"])["mean"].numpy() for c in second], atol=0.1)
    # the recorded pair obeys torch's update: running = (1 - m) * before + m * unbiased batch var
    before = [c for c in hooks.calls["f.1"] if c["step"] == 2][0]
    prev = [c for c in hooks.calls["f.1"] if c["step"] == 1][-1]["buffers"]["running_var"].double()
    n = before["x"].shape[0]
    want = 0.9 * prev + 0.1 * before["x"].double().var(0, unbiased=False) * n / (n - 1)
    np.testing.assert_allclose(run.running_stats("f.1")[2][1], want.numpy(), rtol=1e-5)


def test_gradient_accumulation_records_the_first_micro_batch_of_each_step(tmp_path):
    g = torch.Generator().manual_seed(4)
    micro = [[torch.randn(6, 4, generator=g) + k for k in range(3)] for _ in range(5)]

    def run_loop(model, w=None, spy=None):
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        losses = []
        for batches in micro:
            opt.zero_grad()
            for x in batches:
                loss = model(x).pow(2).mean() / len(batches)
                loss.backward()
                losses.append(loss.item())
            opt.step()
            if w is not None:
                w.step(loss=sum(losses[-3:]))
                spy.next()
        return losses

    plain, losses, model, spy = plain_and_watched(_mlp, run_loop, ["1", "4"], tmp_path / "accum", 2)
    assert losses == plain
    run = bnviz.open_run(tmp_path / "accum")
    assert_recorded_as_spied(run, spy, model, [0, 2, 4])
    # three forwards per step: the buffers after the first, not after the third
    assert run.layer_state("1")["num_batches_tracked"].tolist() == [1, 7, 13]


def test_a_gan_generator_and_discriminator_each_in_their_own_run(tmp_path):
    """D is called on the real batch, on the detached fake one (its own step), then on the fake
    one again for G's loss: that call is D's first training forward after its next step."""
    def build():
        torch.manual_seed(0)
        G = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
        D = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
        return G, D

    g = torch.Generator().manual_seed(5)
    data = [(torch.randn(6, 4, generator=g) + 2, torch.randn(6, 3, generator=g)) for _ in range(4)]

    def run_loop(G, D, wg=None, wd=None, sg=None, sd=None):
        og, od = torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 1e-3)
        losses = []
        for real, z in data:
            fake = G(z)
            ld = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
            od.zero_grad()
            ld.backward()
            od.step()
            if wd is not None:
                wd.step(loss=ld)
                sd.next()
            lg = F.softplus(-D(fake)).mean()
            og.zero_grad()
            lg.backward()
            og.step()
            if wg is not None:
                wg.step(loss=lg)
                sg.next()
            losses += [ld.item(), lg.item()]
        return losses

    plain = run_loop(*build())
    G, D = build()
    sg, sd = Spy(G, ["1"]), Spy(D, ["1"])
    with bnviz.watch(G, tmp_path / "G", every=1) as wg, bnviz.watch(D, tmp_path / "D", every=1) as wd:
        losses = run_loop(G, D, wg, wd, sg, sd)
    assert losses == plain
    for model, spy, d in ((G, sg, "G"), (D, sd, "D")):
        spy.close()
        run = bnviz.open_run(tmp_path / d)
        assert run.norm_layers == ["1"]
        assert_recorded_as_spied(run, spy, model, [0, 1, 2, 3])
    # D's step 1 is the D(fake) call of the first iteration, made after D's first step
    d_run = bnviz.open_run(tmp_path / "D")
    np.testing.assert_allclose(d_run.batch_stats("1")[1][1],
                               oracle(D[1], sd.calls["1"][2]["x"])["mean"].numpy(), rtol=1e-4, atol=1e-5)


# ----- odd loops ---------------------------------------------------------------------------------
def test_validation_forwards_between_steps_are_not_recorded(tmp_path):
    g = torch.Generator().manual_seed(6)
    torch.manual_seed(0)
    model = _mlp()
    spy = Spy(model, ["1", "4"])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with bnviz.watch(model, tmp_path / "val", every=1) as w:
        for _ in range(4):
            model.eval()
            with torch.no_grad():
                model(torch.randn(9, 4, generator=g) + 10)        # far from the training data
            model.train()
            loss = model(torch.randn(6, 4, generator=g)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.step(loss=loss)
            spy.next()
            model.eval()
            with torch.no_grad():
                model(torch.randn(9, 4, generator=g) - 10)
            model.train()
    spy.close()
    run = bnviz.open_run(tmp_path / "val")
    assert_recorded_as_spied(run, spy, model, [0, 1, 2, 3])
    assert run.layer_state("1")["training"].all()
    assert run.layer_state("1")["num_batches_tracked"].tolist() == [1, 2, 3, 4]


def test_a_step_without_a_forward_records_its_scalars_only(tmp_path):
    torch.manual_seed(0)
    model = _mlp()
    spy = Spy(model, ["1"])
    forwards = {1, 2, 4, 5}
    with bnviz.watch(model, tmp_path / "gaps", every=1) as w:
        for step in range(6):
            if step in forwards:
                model(torch.randn(5, 4)).sum().backward()
            w.step(loss=float(step))
            spy.next()
    spy.close()
    run = bnviz.open_run(tmp_path / "gaps")
    assert_recorded_as_spied(run, spy, model, [1, 2, 4, 5], ["1"])
    steps, values = run.scalars("loss")
    assert steps.tolist() == list(range(6)) and values.tolist() == [float(s) for s in range(6)]


def test_scalars_of_every_kind_and_name_read_back(tmp_path):
    model = _mlp()
    given = {"loss": torch.tensor(1.25, requires_grad=True) * 2, "t1": torch.tensor([0.5], dtype=torch.float64),
             "bf16": torch.tensor(0.1, dtype=torch.bfloat16), "np32": np.float32(2.5), "np0d": np.array(3.0),
             "np1": np.array([4.0]), "int": 7, "bool": True, "nan": float("nan"), "inf": math.inf,
             "ninf": -math.inf, "val loss": 1.0, "Ünïcödé 損失 λ": 2.0, "with.dots/and-dashes": 3.0}
    want = {"loss": 2.5, "t1": 0.5, "bf16": float(torch.tensor(0.1, dtype=torch.bfloat16)), "np32": 2.5,
            "np0d": 3.0, "np1": 4.0, "int": 7.0, "bool": 1.0, "nan": math.nan, "inf": math.inf,
            "ninf": -math.inf, "val loss": 1.0, "Ünïcödé 損失 λ": 2.0, "with.dots/and-dashes": 3.0}
    with bnviz.watch(model, tmp_path / "s", every=1) as w:
        model(torch.randn(5, 4))
        w.step(**given)
        model(torch.randn(5, 4))
        w.step()                                                     # no scalars at all
        with pytest.raises(TypeError, match="np2.*shape \\(2,\\)"):
            w.step(np2=np.array([1.0, 2.0]))
        with pytest.raises(TypeError, match="t2.*shape \\(2,\\)"):
            w.step(t2=torch.ones(2))
    run = bnviz.open_run(tmp_path / "s")
    assert run.scalar_names == sorted(want)
    for name, value in want.items():
        steps, values = run.scalars(name)
        assert steps.tolist() == [0]
        np.testing.assert_array_equal(values, [value])               # NaN equal to NaN, inf kept
    assert run.batch_stats("1")[0].tolist() == [0, 1]                # the step without scalars recorded too


def test_close_without_any_step_leaves_an_empty_finished_run_that_everything_reads(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LazyBatchNorm2d(), nn.ReLU())
    w = bnviz.watch(model, tmp_path / "runs" / "empty", every=3)
    w.close()
    w.close()                                                        # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        w.step(loss=1.0)
    run = bnviz.open_run(tmp_path / "runs" / "empty")
    assert run.status == "finished" and run.norm_layers == ["1"] and run.scalar_names == []
    steps, mean, var = run.batch_stats("1")
    assert len(steps) == 0 and len(mean) == 0
    assert len(run.history().snapshots) == 0
    assert all(f.severity == "ok" for f in assert_doctor_reads_it(run))
    status, out, err = run_cli("doctor", str(tmp_path / "runs" / "empty"))
    assert status == 0 and "0 problem(s)" in out, err
    status, out, _ = run_cli("runs", str(tmp_path / "runs"))
    assert status == 0 and "empty" in out and "finished" in out


def test_lazy_layers_are_described_once_they_know_their_shape_even_after_an_early_step(tmp_path):
    """w.step before the first forward opened the run while LazyBatchNorm had no channels and no
    gamma/beta; the run said so for good and the doctor skipped its parameters."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LazyBatchNorm1d(), nn.ReLU())
    with bnviz.watch(model, tmp_path / "lazy", every=1) as w:
        w.step(lr=0.1)                                               # a step with no forward yet
        for _ in range(3):
            model(torch.randn(5, 4) * 2).sum().backward()
            w.step(lr=0.1)
    run = bnviz.open_run(tmp_path / "lazy")
    [info] = run.layers
    assert (info.channels, info.affine, info.tracks_running_stats) == (6, True, True)
    assert run.batch_stats("1")[1].shape == (3, 6)
    nonfinite = [f for f in assert_doctor_reads_it(run) if f.check == "nonfinite"][0]
    assert nonfinite.severity == "ok" and "every recorded value finite" in nonfinite.evidence


def test_watching_the_same_model_twice_in_a_row(tmp_path):
    torch.manual_seed(0)
    model = _mlp()
    g = torch.Generator().manual_seed(7)
    for d in ("first", "second"):
        spy = Spy(model, ["1", "4"])
        with bnviz.watch(model, tmp_path / d, every=2) as w:
            for _ in range(3):
                model(torch.randn(6, 4, generator=g)).pow(2).mean().backward()
                w.step()
                spy.next()
        spy.close()
        assert all(not m._forward_hooks for m in model.modules())
        assert_recorded_as_spied(bnviz.open_run(tmp_path / d), spy, model, [0, 2])


def test_deep_copies_of_the_model_mid_step_work_and_are_not_recorded(tmp_path):
    """An EMA twin / best-so-far copy made by copy.deepcopy between the forward and w.step:
    torch refused to deep-copy the tensors the recorder's hooks held."""
    g = torch.Generator().manual_seed(9)
    inputs = [torch.randn(6, 4, generator=g) for _ in range(4)]

    def run_loop(model, w=None, spy=None):
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        losses, copies = [], []
        for x in inputs:
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            twin = copy.deepcopy(model)                              # between the forward and w.step
            twin(torch.randn(6, 4, generator=g) * 5)                 # trains the copy's BN, in train mode
            copies.append(twin)
            losses.append(loss.item())
            if w is not None:
                w.step(loss=loss)
                spy.next()
        return losses, copies

    (plain, _), (losses, copies), model, spy = plain_and_watched(_mlp, run_loop, ["1", "4"], tmp_path / "copies", 1)
    assert losses == plain
    assert_recorded_as_spied(bnviz.open_run(tmp_path / "copies"), spy, model, [0, 1, 2, 3])
    for twin in copies:   # whatever the copies kept of the hooks does nothing
        for m in twin.modules():
            for hook in list(m._forward_hooks.values()) + list(m._forward_pre_hooks.values()):
                assert hook(m, (torch.ones(2, 4),), torch.ones(2, 4)) is None
    assert [c["step"] for c in spy.calls["1"]] == [0, 1, 2, 3]      # the copies' forwards reached no hook


def test_saving_the_whole_model_mid_step_works_and_loads_without_the_hooks(tmp_path):
    torch.manual_seed(0)
    model = _mlp()
    with bnviz.watch(model, tmp_path / "save", every=1, holdout=(torch.randn(4, 4), torch.randn(4, 8))) as w:
        for _ in range(2):
            model(torch.randn(6, 4)).pow(2).mean().backward()
            buffer = io.BytesIO()
            torch.save(model, buffer)                                # armed, the step's copies held
            w.step(loss=1.0)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    loaded(torch.randn(6, 4))
    assert bnviz.open_run(tmp_path / "save").batch_stats("1")[0].tolist() == [0, 1]


def test_an_exception_in_the_with_block_propagates_unchanged_and_the_run_says_failed(tmp_path):
    model = _mlp()
    boom = RuntimeError("boom")
    with pytest.raises(RuntimeError) as err:
        with bnviz.watch(model, tmp_path / "boom", every=1) as w:
            model(torch.randn(5, 4))
            w.step(loss=1.0)
            model(torch.randn(5, 4))                                 # armed, then the loop fails
            raise boom
    assert err.value is boom
    assert all(not m._forward_hooks for m in model.modules())
    run = bnviz.open_run(tmp_path / "boom")
    assert run.status == "failed" and run.batch_stats("1")[0].tolist() == [0]


@pytest.mark.parametrize("every, steps", [(1, [0, 1, 2, 3, 4]), (100, [0]), (np.int64(2), [0, 2, 4])],
                         ids=["1", "longer-than-the-run", "numpy-integer"])
def test_every_one_and_every_longer_than_the_run(tmp_path, every, steps):
    torch.manual_seed(0)
    model = _mlp()
    spy = Spy(model, ["1", "4"])
    with bnviz.watch(model, tmp_path / "e", every=every) as w:
        for _ in range(5):
            model(torch.randn(6, 4)).pow(2).mean().backward()
            w.step(loss=1.0)
            spy.next()
    spy.close()
    run = bnviz.open_run(tmp_path / "e")
    assert_recorded_as_spied(run, spy, model, steps)
    assert run.scalars("loss")[0].tolist() == [0, 1, 2, 3, 4]


def test_nan_and_inf_inputs_are_recorded_as_such_without_warnings_and_the_doctor_names_them(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 3), nn.LayerNorm(3))
    xs = [torch.randn(6, 3) for _ in range(3)]
    xs[0][0, 0] = math.nan
    xs[1][2] = math.inf
    spy = Spy(model, ["0", "3"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                               # numpy's "invalid value" ones included
        with bnviz.watch(model, tmp_path / "nan", every=1) as w:
            for x in xs:
                out = model(x)
                w.step(loss=out.sum())
                spy.next()
        run = bnviz.open_run(tmp_path / "nan")
        findings = assert_doctor_reads_it(run)
    spy.close()
    assert_recorded_as_spied(run, spy, model, [0, 1, 2])             # NaN where the oracle has NaN
    assert not np.isfinite(run.batch_stats("0")[1][:2]).all()
    nonfinite = [f for f in findings if f.check == "nonfinite" and f.layer == "0"][0]
    assert nonfinite.severity == "problem" and "step 0" in nonfinite.evidence
    assert math.isnan(run.scalars("loss")[1][0])


def test_a_batch_of_one_image_is_recorded_and_the_doctor_names_it(tmp_path):
    torch.manual_seed(0)
    model = _conv(nn.BatchNorm2d(6))
    spy = Spy(model, ["1"])
    with bnviz.watch(model, tmp_path / "one", every=1) as w:
        train(model, [torch.randn(1, 3, 6, 6) for _ in range(3)], w, spy)  # torch allows it: H*W > 1
    spy.close()
    run = bnviz.open_run(tmp_path / "one")
    assert_recorded_as_spied(run, spy, model, [0, 1, 2])
    assert run.layer_state("1")["samples"].tolist() == [1, 1, 1]
    few = [f for f in assert_doctor_reads_it(run) if f.check == "few_values"][0]
    assert few.severity == "problem" and "batches of one" in few.evidence


def test_batchnorm1d_on_one_sample_raises_torchs_own_error_unwrapped(tmp_path):
    def forward_one(model):
        model(torch.randn(1, 4))

    torch.manual_seed(0)
    with pytest.raises(ValueError) as bare:
        forward_one(_mlp())
    model = _mlp()
    with pytest.raises(ValueError) as err:
        with bnviz.watch(model, tmp_path / "bs1", every=1) as w:
            model(torch.randn(4, 4))
            w.step(loss=1.0)
            forward_one(model)
    assert type(err.value) is type(bare.value) and str(err.value) == str(bare.value)
    assert "Expected more than 1 value per channel" in str(err.value)
    frames = [f.filename for f in traceback.extract_tb(err.value.__traceback__)]
    assert not [f for f in frames if "/bnviz/" in f.replace("\\", "/")], frames
    assert bnviz.open_run(tmp_path / "bs1").status == "failed"


@pytest.mark.parametrize("kind", ["str with spaces and unicode", "pathlib.Path"])
def test_run_directories_with_spaces_unicode_and_path_objects(tmp_path, kind):
    root = tmp_path / "my runs ü 日本"
    run_dir = root / "exp #1 (copy)?"
    where = str(run_dir) if kind.startswith("str") else run_dir
    torch.manual_seed(0)
    model = _mlp()
    spy = Spy(model, ["1", "4"])
    with bnviz.watch(model, where, every=1) as w:
        for _ in range(2):
            model(torch.randn(6, 4)).pow(2).mean().backward()
            w.step(loss=0.5)
            spy.next()
    spy.close()
    run = bnviz.open_run(where)
    assert run.path == run_dir
    assert_recorded_as_spied(run, spy, model, [0, 1])
    status, out, _ = run_cli("doctor", str(run_dir))
    assert status in (0, 1) and str(run_dir) in out
    status, out, _ = run_cli("runs", str(root))
    assert status == 0 and "exp #1 (copy)?" in out and "finished" in out


def test_a_run_directory_that_holds_an_earlier_run(tmp_path):
    model = _mlp()
    with bnviz.watch(model, tmp_path / "r", every=1) as w:
        for _ in range(3):
            model(torch.randn(5, 4))
            w.step(loss=1.0)
    (tmp_path / "r" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"{RUN_FILE}.*overwrite=True"):
        bnviz.watch(model, tmp_path / "r")
    assert bnviz.open_run(tmp_path / "r").batch_stats("1")[0].tolist() == [0, 1, 2]    # untouched
    with bnviz.watch(model, tmp_path / "r", every=1, overwrite=True) as w:
        model(torch.randn(5, 4))
        w.step(loss=2.0)
    run = bnviz.open_run(tmp_path / "r")
    assert run.batch_stats("1")[0].tolist() == [0] and run.scalars("loss")[1].tolist() == [2.0]
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"


def test_holdout_on_a_model_of_two_inputs_and_on_one_it_cannot_evaluate(tmp_path):
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))

        def forward(self, a, b):
            return self.f(a) + self.f(b)

    g = torch.Generator().manual_seed(8)
    batches = [(torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g), torch.randint(0, 3, (6,), generator=g))
               for _ in range(4)]
    held = (torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g))
    y_held = torch.randint(0, 3, (10,), generator=g)

    def run_loop(holdout=None, where=None):
        torch.manual_seed(0)
        model = Pair()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        w = bnviz.watch(model, where, every=2, holdout=holdout) if where else None
        losses, expected = [], []
        for step, (a, b, y) in enumerate(batches):
            loss = F.cross_entropy(model(a, b), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if w is not None:
                if step % 2 == 0:     # the oracle: the held-out loss in eval mode, on a copy
                    twin = copy.deepcopy(model).eval()
                    with torch.no_grad():
                        expected.append(F.cross_entropy(twin(*held), y_held).item())
                w.step(loss=loss)
        if w is not None:
            w.close()
        return losses, expected

    plain, _ = run_loop()
    losses, expected = run_loop((held, y_held), tmp_path / "pair")   # inputs as a tuple: model(*inputs)
    assert losses == plain
    run = bnviz.open_run(tmp_path / "pair")
    assert {"holdout_acc", "holdout_loss", "holdout_precise_acc"} <= set(run.scalar_names)
    steps, values = run.scalars("holdout_loss")
    assert steps.tolist() == [0, 2]
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    with pytest.warns(RuntimeWarning, match="held-out evaluation failed.*TypeError"):
        losses, _ = run_loop((held[0], y_held), tmp_path / "single")   # the model needs two inputs
    assert losses == plain                                           # training went on, unchanged
    run = bnviz.open_run(tmp_path / "single")
    assert run.status == "finished" and run.batch_stats("f.1")[0].tolist() == [0, 2]
    assert "holdout_acc" not in run.scalar_names


# ----- opening what is not a run -----------------------------------------------------------------
@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A finished run of a few recorded steps; its file is copied and damaged by the tests."""
    root = tmp_path_factory.mktemp("real")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(96, 2),
                          nn.LayerNorm(2))
    with bnviz.watch(model, root / "run", every=2) as w:
        for _ in range(12):
            model(torch.randn(4, 3, 6, 6)).pow(2).mean().backward()
            w.step(loss=1.0, acc=0.5)
    return root / "run" / RUN_FILE


def _read_everything(where) -> None:
    run = bnviz.open_run(where)
    run.meta, run.status, run.snapshot_steps, run.edges
    for name in run.norm_layers:
        run.batch_stats(name), run.running_stats(name), run.params(name), run.layer_state(name)
    for name in run.scalar_names:
        run.scalars(name)
    run.history()
    doctor.diagnose(run)


def test_open_run_on_a_folder_without_a_run_names_the_folder(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(tmp_path / 'nothing'))}.*holds no"):
        bnviz.open_run(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bnviz.open_run(tmp_path / "missing")
    status, _, err = run_cli("doctor", str(tmp_path / "nothing"))
    assert status == 2 and err.count("\n") == 1 and str(tmp_path / "nothing") in err and "Traceback" not in err


@pytest.mark.parametrize("content, words", [
    (b"step,loss\n0,2.3\n1,2.1\n", "not a SQLite database"),
    (b"x", "not a SQLite database"),              # shorter than SQLite's header: it called it an empty database
    (b"", "empty SQLite database"),
], ids=["text", "one-byte", "empty"])
@pytest.mark.parametrize("as_file", [False, True], ids=["folder", "file"])
def test_open_run_on_a_text_or_empty_file_names_the_file_and_the_problem(tmp_path, content, words, as_file):
    f = tmp_path / "run" / RUN_FILE
    f.parent.mkdir()
    f.write_bytes(content)
    with pytest.raises(RunFileError) as err:
        bnviz.open_run(f if as_file else f.parent)
    assert str(f) in str(err.value) and words in str(err.value)
    status, _, out = run_cli("doctor", str(f.parent))
    assert status == 2 and str(f) in out and "Traceback" not in out


def test_open_run_on_a_truncated_copy_fails_at_once_naming_the_file(tmp_path, real_run):
    data = real_run.read_bytes()
    page = 4096
    cuts = sorted({50, 100, 1000, page, len(data) // 3, len(data) // 2, len(data) - page, len(data) - 1})
    for cut in cuts:
        f = tmp_path / f"cut-{cut}" / RUN_FILE
        f.parent.mkdir()
        f.write_bytes(data[:cut])
        with pytest.raises(RunFileError) as err:                     # at open, not at some later read
            bnviz.open_run(f.parent)
        assert str(f) in str(err.value), cut
        assert "truncated" in str(err.value) or "not a SQLite database" in str(err.value), (cut, str(err.value))
        status, _, out = run_cli("doctor", str(f.parent))
        assert status == 2 and str(f) in out and "Traceback" not in out
    whole = tmp_path / "whole" / RUN_FILE                            # the untouched copy reads
    whole.parent.mkdir()
    whole.write_bytes(data)
    _read_everything(whole.parent)


DAMAGE = {
    "a BLOB read back as TEXT": "UPDATE norms SET batch_mean = 'garbage' WHERE step = 2",
    "a scalar value as TEXT": "UPDATE scalars SET value = 'abc' WHERE step = 3",
    "a step as TEXT": "UPDATE norms SET step = 'abc' WHERE step = 2",
    "meta without scalar strides": "DELETE FROM meta WHERE key = 'scalar_strides'",
    "meta without its times": "DELETE FROM meta WHERE key = 'updated'",
    "a stride of another type": "UPDATE meta SET value = '\"x\"' WHERE key = 'snapshot_stride'",
    "scalar strides as a list": "UPDATE meta SET value = '[1]' WHERE key = 'scalar_strides'",
    "a short BLOB": "UPDATE norms SET running_var = x'0000' WHERE step = 4",
    "tap keys that are not JSON": "UPDATE snapshots SET taps = 'not json' WHERE step = 2",
}


@pytest.mark.parametrize("what", list(DAMAGE))
def test_damaged_values_inside_a_run_raise_run_file_error_naming_the_file(tmp_path, real_run, what):
    f = tmp_path / "run" / RUN_FILE
    f.parent.mkdir()
    shutil.copy(real_run, f)
    with sqlite3.connect(f) as db:
        db.execute(DAMAGE[what])
    db.close()
    with pytest.raises(RunFileError) as err:
        _read_everything(f.parent)
    assert str(f) in str(err.value) and "damaged" in str(err.value)
    # The command line reads only what its checks need: an error, if it meets the damage, is one
    # line naming the file (exit 2), never a traceback.
    status, _, out = run_cli("doctor", str(f.parent))
    assert status in (0, 1) or (status == 2 and str(f) in out and out.count("\n") == 1)
    status, listing, _ = run_cli("runs", str(tmp_path))
    assert status == 0 and "run" in listing


def test_asking_for_what_a_run_does_not_hold_is_a_key_error_not_damage(real_run):
    run = bnviz.open_run(real_run.parent)
    with pytest.raises(KeyError, match="no scalar 'lr'.*it has: acc, loss"):
        run.scalars("lr")
    with pytest.raises(KeyError, match="'bn' is not a recorded layer"):
        run.batch_stats("bn")
