"""The hook-based recorder on models bnviz did not build, against independent forward hooks,
numpy and the modules' own buffers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bnviz.record import PERCENTILES
from bnviz.recorder import Recorder, find_layers, norm_family


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock, written out: one ReLU module used twice, in place, and
    ``out += identity`` in place after bn2."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, stride=2))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.layer1(self.stem(x)).mean((2, 3)))


class TinyTransformer(nn.Module):
    def __init__(self, d: int = 16):
        super().__init__()
        self.embed = nn.Embedding(20, d)
        self.block = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True, norm_first=True)
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, 20)

    def forward(self, tokens):
        return self.head(self.norm(self.block(self.embed(tokens)))).mean(1)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.GELU(),
                                 nn.Conv2d(8, 8, 3, padding=1), nn.InstanceNorm2d(8, affine=True, track_running_stats=True),
                                 nn.SiLU(), nn.Conv2d(8, 4, 1), nn.LazyBatchNorm2d(), nn.Tanh())

    def forward(self, x):
        return self.net(x).mean((2, 3))


def independent_hooks(model: nn.Module, names: list[str], run) -> dict[str, dict]:
    """The norm layers' input, output and buffers by plain forward hooks, written without bnviz."""
    modules = dict(model.named_modules())
    seen: dict[str, dict] = {}
    handles = []
    for name in names:
        def hook(m, inputs, output, name=name):
            if name in seen:
                return
            seen[name] = {"input": inputs[0].detach().clone(), "output": output.detach().clone(),
                          "buffers": {k: v.detach().clone() for k, v in m.named_buffers()},
                          "params": {k: v.detach().clone() for k, v in m.named_parameters()}}
        handles.append(modules[name].register_forward_hook(hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def per_channel(name_family: str, x: np.ndarray, normalized_ndim: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased variance per channel: axis 1 for batch/group/instance norms, the first
    normalized axis (the last axis here) for layer/RMS norms."""
    x = x.astype(np.float64)
    if name_family in ("layer", "rms"):
        flat = x.reshape(-1, x.shape[-1])
        return flat.mean(0), flat.var(0)
    axes = (0, *range(2, x.ndim))
    return x.mean(axes), x.var(axes)


CASES = {
    "resnet": (TinyResNet, lambda g: torch.randn(6, 3, 8, 8, generator=g),
               ["stem.1", "layer1.0.bn1", "layer1.0.bn2", "layer1.1.bn1", "layer1.1.bn2", "layer1.1.downsample.1"]),
    "transformer": (TinyTransformer, lambda g: torch.randint(0, 20, (4, 7), generator=g),
                    ["block.norm1", "block.norm2", "norm"]),
    "mixed": (Mixed, lambda g: torch.randn(5, 3, 6, 6, generator=g), ["net.1", "net.4", "net.7"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_recorded_statistics_equal_independent_hooks_and_the_buffers(case):
    cls, make_input, expected_names = CASES[case]
    torch.manual_seed(0)
    model = cls()
    g = torch.Generator().manual_seed(1)
    x = make_input(g)
    model(x)  # a lazy module learns its shape; the running statistics move once
    rec = Recorder(model)
    assert [s.name for s in rec.layers] == expected_names
    rec.arm()
    seen = independent_hooks(model, expected_names, lambda: model(x))
    snap = rec.collect(3)
    assert snap is not None and snap.step == 3
    modules = dict(model.named_modules())
    for i, name in enumerate(expected_names):
        m, ref, ns = modules[name], seen[name], snap.norms[i]
        family = norm_family(m)
        mean, var = per_channel(family, ref["input"].numpy())
        np.testing.assert_allclose(ns.batch_mean, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ns.batch_var, var, rtol=1e-4, atol=1e-6)
        if "running_mean" in ref["buffers"]:
            np.testing.assert_array_equal(ns.running_mean, ref["buffers"]["running_mean"].numpy())
            np.testing.assert_array_equal(ns.running_var, ref["buffers"]["running_var"].numpy())
            np.testing.assert_array_equal(ns.running_mean, m.running_mean.numpy())  # right after it
            assert ns.num_batches_tracked == int(m.num_batches_tracked)
        else:
            assert ns.running_mean is None
        if "weight" in ref["params"]:
            np.testing.assert_array_equal(ns.weight, ref["params"]["weight"].numpy())
        # the histogram of the norm's output against numpy on the same values
        edges = rec.edges["norm_output"]
        counts, _ = np.histogram(ref["output"].numpy().ravel(), bins=edges)
        np.testing.assert_array_equal(snap.taps[(i, "norm_output")].counts, counts)
        np.testing.assert_allclose(snap.taps[(i, "norm_output")].percentiles,
                                   np.percentile(ref["output"].numpy().ravel(), PERCENTILES), rtol=1e-5, atol=1e-6)
        assert ns.training and not ns.frozen


def test_in_place_relu_and_in_place_residual_add_do_not_change_what_was_recorded():
    torch.manual_seed(0)
    model = TinyResNet()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    rec = Recorder(model)
    rec.arm()
    seen = independent_hooks(model, ["layer1.0.bn1", "layer1.0.bn2"], lambda: model(x))
    # The independent hook copied bn1's output before the in-place ReLU overwrote it.
    tensors = rec.tensors()
    names = [s.name for s in rec.layers]
    bn1, bn2 = names.index("layer1.0.bn1"), names.index("layer1.0.bn2")
    torch.testing.assert_close(tensors[bn1]["norm_output"], seen["layer1.0.bn1"]["output"])
    torch.testing.assert_close(tensors[bn1]["post_activation"], torch.relu(seen["layer1.0.bn1"]["output"]))
    assert (tensors[bn1]["norm_output"] < 0).any()                   # not the ReLU'd values
    torch.testing.assert_close(tensors[bn2]["norm_output"], seen["layer1.0.bn2"]["output"])
    # bn2 has no activation of its own: the shared ReLU after the addition is not its activation
    assert "post_activation" not in tensors[bn2]
    snap = rec.collect(0)
    assert (bn2, "post_activation") not in snap.taps and (bn1, "post_activation") in snap.taps
    assert snap.taps[(bn1, "post_activation")].zero_frac > 0.2


def test_only_armed_steps_register_hooks_and_eval_passes_are_not_recorded():
    model = TinyResNet()
    rec = Recorder(model)
    modules = [m for m in model.modules() if norm_family(m)]
    assert all(not m._forward_hooks for m in modules)
    rec.arm()
    assert all(m._forward_hooks for m in modules)
    model.eval()
    model(torch.randn(2, 3, 8, 8))
    assert not rec.captured                                           # a validation pass
    model.train()
    model(torch.randn(2, 3, 8, 8))
    assert rec.captured
    rec.collect(0)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_find_layers_pairs_a_norm_with_the_activation_registered_after_it():
    seq = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.LayerNorm(8),
                        nn.Linear(8, 2))
    layers = find_layers(seq)
    assert [(s.name, type(s.act).__name__ if s.act else None) for s in layers] == [("1", "ReLU"), ("4", None)]


def test_ddp_wrapped_names_are_the_inner_models():
    from bnviz.recorder import unwrap
    model = TinyResNet()
    wrapped = nn.DataParallel(model)
    assert unwrap(wrapped) is model
    assert [s.name for s in Recorder(wrapped).layers][:2] == ["stem.1", "layer1.0.bn1"]


def test_training_is_identical_bit_for_bit_with_and_without_recording():
    def run(record: bool) -> list[float]:
        torch.manual_seed(0)
        model = TinyResNet()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        g = torch.Generator().manual_seed(5)
        rec = Recorder(model)
        losses = []
        for step in range(12):
            x, y = torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
            if record and step % 3 == 0:
                rec.arm()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if rec.armed:
                rec.collect(step)
            losses.append(loss.item())
        return losses + [p.sum().item() for p in model.parameters()] + [b.sum().item() for b in model.buffers()]

    assert run(True) == run(False)


def _same_snapshot(a, b) -> None:
    """Two Snapshots equal field by field (arrays exactly)."""
    assert a.step == b.step and a.taps.keys() == b.taps.keys() and a.norms.keys() == b.norms.keys()
    for key in a.taps:
        for field in ("counts", "percentiles", "unit_percentiles"):
            np.testing.assert_array_equal(getattr(a.taps[key], field), getattr(b.taps[key], field))
        for field in ("below", "above", "nonfinite", "mean", "std", "zero_frac", "n"):
            assert getattr(a.taps[key], field) == pytest.approx(getattr(b.taps[key], field), rel=1e-12, nan_ok=True)
    for i in a.norms:
        for field in ("batch_mean", "batch_var", "running_mean", "running_var", "weight", "bias"):
            x, y = getattr(a.norms[i], field), getattr(b.norms[i], field)
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)
        for field in ("count", "training", "frozen", "num_batches_tracked", "samples"):
            assert getattr(a.norms[i], field) == getattr(b.norms[i], field)


@pytest.mark.parametrize("case", sorted(CASES))
def test_passes_summarised_together_equal_each_collected_on_its_own(case):
    """capture() + flush() (what train() does: many passes in one numpy pass) gives, pass for
    pass, the Snapshot collect() gives; batches of two sizes, so shape groups differ by pass."""
    make, batch, _ = CASES[case]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    inputs = [batch(g) for _ in range(4)]
    inputs[2] = inputs[2][:3]                                   # a smaller batch among them
    model = make()
    model(inputs[0])                                            # materialise lazy modules
    state = {k: v.clone() for k, v in model.state_dict().items()}
    one_by_one = Recorder(model)
    expected = []
    for step, x in enumerate(inputs):
        one_by_one.arm()
        model(x)
        expected.append(one_by_one.collect(step))
    model.load_state_dict(state)
    together = Recorder(model, edges=one_by_one.edges)
    for step, x in enumerate(inputs):
        together.arm()
        model(x)
        assert together.capture(step)
    assert together.pending == len(inputs)
    got = together.flush()
    assert together.pending == 0 and together.flush() == []
    assert [s.step for s in got] == list(range(len(inputs)))
    for a, b in zip(got, expected):
        _same_snapshot(a, b)


@pytest.mark.parametrize("extra", [{}, {"placement": "after"}, {"activation": "tanh"}, {"arch": "cnn"},
                                   {"dropout": 0.3, "dropout_position": "before_norm"}, {"dropout": 0.3}])
def test_what_a_bnviz_network_says_of_its_blocks_changes_how_not_what_is_recorded(extra):
    """Net.recorded_layers says a block's ReLU takes the norm's output and nothing writes in
    place: no hook on the ReLU, the tensors kept rather than copied; the snapshot is the one the
    recorder takes without being told (a hook on every module, copies)."""
    from dataclasses import replace

    from bnviz.config import Config
    from bnviz.models import build
    from bnviz.record import TAPS, bin_edges

    cfg = Config(width=16, depth=2, **extra)
    shape = (1, 8, 8) if cfg.arch == "cnn" else (64,)
    model = build(cfg, shape, 10, torch.Generator().manual_seed(0))
    model.train()
    x = torch.randn(32, *shape, generator=torch.Generator().manual_seed(1))
    edges = {tap: bin_edges(tap, cfg) for tap in TAPS}
    told = model.recorded_layers()
    untold = [replace(s, act_takes_norm_output=False, read_only=False) for s in told]
    assert [s.act_takes_norm_output for s in told] == [cfg.placement == "before"] * len(told)
    relu_after_norm = cfg.activation == "relu" and cfg.placement == "before"
    state = {k: v.clone() for k, v in model.state_dict().items()}
    masks = [(d.generator, d.generator.get_state()) for d in model.dropouts()]   # the same masks twice
    outputs = {}
    hooks = [b.norm.register_forward_hook(lambda m, i, o, n=n: outputs.setdefault(n, o))
             for n, b in enumerate(model.blocks)]
    rec = Recorder(model, told, edges)
    rec.arm()
    assert all(bool(b.act._forward_hooks) != relu_after_norm for b in model.blocks)
    model(x)
    kept = rec.tensors()
    snap = rec.collect(0)
    for h in hooks:
        h.remove()
    for n, taps in enumerate(kept):   # the norm's very output, not a copy of it
        assert taps["norm_output"].data_ptr() == outputs[n].data_ptr()
    model.load_state_dict(state)
    for generator, drawn in masks:
        generator.set_state(drawn)
    rec = Recorder(model, untold, edges)
    rec.arm()
    assert all(b.act._forward_hooks for b in model.blocks)
    model(x)
    copied = rec.tensors()
    expected = rec.collect(0)
    for a, b in zip(kept, copied):
        assert a.keys() == b.keys()
        for tap in a:
            torch.testing.assert_close(a[tap], b[tap], rtol=0, atol=0)
    _same_snapshot(snap, expected)


def test_an_in_place_activation_is_copied_before_whatever_its_owner_says():
    torch.manual_seed(0)
    from bnviz.recorder import LayerSpec

    seq = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(inplace=True))
    spec = LayerSpec(name="bn", norm=seq[1], act=seq[2], act_takes_norm_output=True, read_only=True)
    rec = Recorder(seq, [spec])
    rec.arm()
    seq(torch.randn(16, 4))
    taps = rec.tensors()[0]
    assert (taps["norm_output"] < 0).any()                       # taken before the ReLU overwrote it
    torch.testing.assert_close(taps["post_activation"], torch.relu(taps["norm_output"]))
    assert rec.collect(0) is not None
