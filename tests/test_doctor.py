"""The BN doctor: every check on a run with its fault planted, and quiet on a healthy run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import bnviz
from bnviz.doctor import CHECKS, diagnose


def _data(n_batches: int, batch: int, seed: int, features: int = 12, shift: float = 0.0, scale: float = 1.0):
    w = torch.randn(features, 3, generator=torch.Generator().manual_seed(1234))   # one labelling rule for all
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        x = torch.randn(batch, features, generator=g)
        out.append((x * scale + shift, (x @ w).argmax(1)))
    return out


def _mlp(features: int = 12, momentum: float | None = 0.1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, 32), nn.BatchNorm1d(32, momentum=momentum), nn.ReLU(),
                         nn.Linear(32, 32), nn.BatchNorm1d(32, momentum=momentum), nn.ReLU(), nn.Linear(32, 3))


def _record(tmp_path, model, batches, *, every=10, prepare_step=None, holdout=None, lr=0.05, params=None):
    opt = torch.optim.SGD(params if params is not None else [p for p in model.parameters() if p.requires_grad], lr=lr)
    with bnviz.watch(model, tmp_path / "run", every=every, holdout=holdout) as w:
        for step, (x, y) in enumerate(batches):
            model.train()
            if prepare_step is not None:
                prepare_step(step, model, x)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.step(loss=loss.item())
    return bnviz.open_run(tmp_path / "run")


def _found(run) -> dict[str, set]:
    """check -> severities that are not ok."""
    out: dict[str, set] = {}
    for f in diagnose(run):
        if f.severity != "ok":
            out.setdefault(f.check, set()).add(f.severity)
    return out


def test_a_healthy_run_is_quiet(tmp_path):
    run = _record(tmp_path, _mlp(), _data(300, 64, seed=0))
    findings = diagnose(run)
    assert {f.check for f in findings} == set(CHECKS)
    assert all(f.severity == "ok" for f in findings), [(f.check, f.layer, f.evidence) for f in findings if f.severity != "ok"]


def test_eval_collapse_running_statistics_far_from_the_batches(tmp_path):
    # The inputs are far from the (0, 1) the running statistics start at, and a momentum of 1e-4
    # never lets them catch up: eval mode normalizes with the wrong numbers.
    holdout = _data(1, 256, seed=9, shift=10.0, scale=5.0)[0]
    run = _record(tmp_path, _mlp(momentum=1e-4), _data(200, 64, seed=1, shift=10.0, scale=5.0), holdout=holdout, lr=0.1)
    found = _found(run)
    assert "problem" in found.get("running_vs_batch", set())
    [f] = [f for f in diagnose(run) if f.check == "running_vs_batch" and f.layer == "1"]
    assert "held-out accuracy" in f.evidence and "precise BN" in f.fix
    assert len(f.steps) == len(f.series["mean gap (batch std)"]) > 3
    _, before = run.scalars("holdout_acc")
    _, after = run.scalars("holdout_precise_acc")
    assert after[-1] > before[-1] + 0.3                # recomputing the statistics fixes eval mode


def test_frozen_parameters_with_bn_in_train_mode(tmp_path):
    model = _mlp()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            for p in m.parameters():
                p.requires_grad_(False)                # "fine-tuning" with frozen BN ... left in train()
    run = _record(tmp_path, model, _data(60, 32, seed=2))
    found = _found(run)
    assert found.get("frozen_but_moving") == {"problem"}
    assert "running_vs_batch" not in found


def test_frozen_bn_in_eval_mode_is_not_flagged(tmp_path):
    model = _mlp()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    for m in bns:
        for p in m.parameters():
            p.requires_grad_(False)

    def eval_bn(step, model, x):
        for m in bns:
            m.eval()
    run = _record(tmp_path, model, _data(60, 32, seed=2), prepare_step=eval_bn)
    assert "frozen_but_moving" not in _found(run)


def test_nonfinite_running_variance(tmp_path):
    batches = _data(60, 32, seed=3)
    x, y = batches[25]
    x = x.clone()
    x[0, 0] = math.inf                                  # one overflowed value in one batch
    batches[25] = (x, y)
    run = _record(tmp_path, _mlp(), batches, lr=0.0)
    f = [f for f in diagnose(run) if f.check == "nonfinite" and f.layer == "1"][0]
    assert f.severity == "problem" and ("running_var" in f.evidence or "running_mean" in f.evidence)


def test_constant_input_channels(tmp_path):
    batches = [(torch.cat([x[:, :9], torch.zeros(len(x), 3)], 1), y) for x, y in _data(40, 32, seed=4)]
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(12), nn.Linear(12, 3))   # padded features straight into BN
    run = _record(tmp_path, model, batches)
    f = [f for f in diagnose(run) if f.check == "dead_channels"][0]
    assert f.severity == "warning" and f.evidence.startswith("3 of 12 channels")


@pytest.mark.parametrize("batch, severity", [(2, "problem"), (6, "warning")])
def test_too_few_values_per_channel(tmp_path, batch, severity):
    run = _record(tmp_path, _mlp(), _data(30, batch, seed=5))
    assert _found(run).get("few_values") == {severity}


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize("batch, severity", [(1, "problem"), (4, "warning"), (16, None)])
def test_a_conv_batch_of_one_is_found_although_h_times_w_is_large(tmp_path, batch, severity):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch, 1, 8, 8, generator=g), torch.randint(0, 3, (batch,), generator=g)) for _ in range(20)]
    run = _record(tmp_path, TinyConv(), batches)
    assert run.layer_state("bn")["count"][0] == batch * 64 and run.layer_state("bn")["samples"][0] == batch
    assert _found(run).get("few_values") == ({severity} if severity else None)


def test_keras_momentum_typed_into_pytorch(tmp_path):
    run = _record(tmp_path, _mlp(momentum=0.99), _data(40, 64, seed=6))
    f = [f for f in diagnose(run) if f.check == "momentum" and f.layer == "1"][0]
    assert f.severity == "warning" and "PyTorch momentum=0.01" in f.fix


def test_a_small_momentum_lags_in_a_short_run(tmp_path):
    run = _record(tmp_path, _mlp(momentum=0.001), _data(100, 64, seed=7))
    f = [f for f in diagnose(run) if f.check == "momentum" and f.layer == "1"][0]
    assert f.severity == "warning" and "lag" in f.evidence


def test_early_in_a_run_a_gap_is_a_warning_not_a_collapse(tmp_path):
    # 10 updates at momentum 0.1: the running statistics still carry a third of their start
    # (mean 0, variance 1) while the shifted inputs are far from it. True, but not yet a fault.
    run = _record(tmp_path, _mlp(), _data(11, 64, seed=8, shift=10.0, scale=5.0), every=5)
    found = [f for f in diagnose(run) if f.check == "running_vs_batch"]
    assert "problem" not in {f.severity for f in found}
    assert any(f.severity == "warning" and "too early to tell" in f.evidence for f in found)


def test_a_short_run_at_pytorchs_default_momentum_is_not_called_a_wrong_momentum(tmp_path):
    # Recorded steps 0, 4, 8: at the last one BN has made 9 updates, and at 0.1 the start still
    # weighs 0.9**9 = 39 %. That is a short run, not a momentum typed in the other convention;
    # the same run at 0.01 does lag (0.99**9 = 91 %).
    short = _record(tmp_path / "default", _mlp(), _data(12, 64, seed=10), every=4)
    assert short.layer_state("1")["num_batches_tracked"][-1] == 9
    [f] = [f for f in diagnose(short) if f.check == "momentum" and f.layer == "1"]
    assert f.severity == "ok" and "short run" in f.evidence and f"{0.9 ** 9:.0%}" in f.evidence, f.evidence
    lagging = _record(tmp_path / "small", _mlp(momentum=0.01), _data(12, 64, seed=10), every=4)
    [f] = [f for f in diagnose(lagging) if f.check == "momentum" and f.layer == "1"]
    assert f.severity == "warning" and f"{0.99 ** 9:.0%}" in f.evidence, f.evidence


class Norms(nn.Module):
    """RMSNorm (a weight, no bias) and InstanceNorm with running statistics (which torch updates
    without counting them in num_batches_tracked)."""

    def __init__(self, momentum: float):
        super().__init__()
        self.inp = nn.Linear(12, 32)
        self.rms = nn.RMSNorm(32)
        self.inorm = nn.InstanceNorm1d(4, affine=True, track_running_stats=True, momentum=momentum)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        h = self.rms(self.inp(x))
        h = self.inorm(h.reshape(len(x), 4, 8)).reshape(len(x), 32)
        return self.head(torch.relu(h))


def test_a_layer_without_a_bias_or_a_batch_counter_is_read_for_what_it_has(tmp_path):
    torch.manual_seed(0)
    model = Norms(momentum=0.001)
    run = _record(tmp_path, model, _data(40, 64, seed=11))
    assert run.has("rms", "weight") and not run.has("rms", "bias") and not run.has("rms", "running_mean")
    assert run.has("inorm", "running_mean") and model.inorm.num_batches_tracked.item() == 0
    findings = {(f.check, f.layer): f for f in diagnose(run)}
    assert findings[("nonfinite", "rms")].severity == "ok"      # the missing bias is no NaN
    lag = findings[("momentum", "inorm")]
    # At the last recorded step (30) the layer has run 31 training forwards, each an update of its
    # running statistics; torch's counter stayed 0, so the doctor counts the forwards instead.
    assert run.layer_state("inorm")["steps"][-1] == 30
    assert lag.severity == "warning" and "after 31 updates" in lag.evidence, lag.evidence
    with pytest.raises(ValueError, match="no per-channel array"):
        run.has("rms", "weight; DROP TABLE norms")


def test_the_fix_for_too_few_values_fits_what_the_layer_averages_over(tmp_path):
    # A LayerNorm over 6 features: larger batches would not help it, and the fix must not say so.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 3))
    run = _record(tmp_path / "ln", model, _data(20, 64, seed=12))
    [ln] = [f for f in diagnose(run) if f.check == "few_values"]
    assert ln.severity == "warning" and "as few as 6 values per statistic" in ln.evidence
    assert "larger batches do not help" in ln.fix
    small_batch = _record(tmp_path / "bn", _mlp(), _data(20, 4, seed=12))
    [bn] = [f for f in diagnose(small_batch) if f.check == "few_values" and f.layer == "1"]
    assert bn.severity == "warning" and "Use larger batches" in bn.fix


class PerSampleNorms(nn.Module):
    """A LayerNorm, a GroupNorm and a BatchNorm without running statistics: none keeps any."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(12, 32)
        self.ln = nn.LayerNorm(32)
        self.gn = nn.GroupNorm(4, 32)
        self.bn = nn.BatchNorm1d(32, track_running_stats=False)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.gn(self.ln(self.inp(x))))))


def test_checks_of_running_statistics_say_they_do_not_apply_to_a_layer_that_keeps_none(tmp_path):
    torch.manual_seed(0)
    model = PerSampleNorms()
    run = _record(tmp_path, model, _data(30, 32, seed=13))
    kinds = {"ln": "LayerNorm normalizes each sample", "gn": "GroupNorm normalizes each sample",
             "bn": "track_running_stats=False"}
    findings = {(f.check, f.layer): f for f in diagnose(run)}
    for name, words in kinds.items():
        assert getattr(getattr(model, name), "running_mean", None) is None   # torch's own word: it keeps none
        for check in ("running_vs_batch", "frozen_but_moving", "momentum"):
            f = findings[(check, name)]
            assert f.severity == "ok" and f.evidence.startswith("not applicable") and words in f.evidence, (name, f)


def test_statistics_that_turn_non_finite_are_left_to_that_check_not_judged_at_an_older_step(tmp_path):
    """From step 25 on, an inf in the input makes the first BN's running variance inf for good: the
    non-finite check is the problem; the running-vs-batch check does not report a gap of a step long
    before it."""
    batches = _data(60, 32, seed=3)
    for i in range(25, 60):
        x, y = batches[i]
        x = x.clone()
        x[0, 0] = math.inf
        batches[i] = (x, y)
    run = _record(tmp_path, _mlp(), batches, lr=0.0)
    steps, _, rvar = run.running_stats("1")
    first_bad = int(steps[np.flatnonzero(~np.isfinite(rvar).all(1))[0]])
    assert first_bad > 0 and not np.isfinite(rvar[-1]).all()            # the recorded buffers, the oracle
    findings = {(f.check, f.layer): f for f in diagnose(run)}
    assert findings[("nonfinite", "1")].severity == "problem"
    gap = findings[("running_vs_batch", "1")]
    assert gap.severity == "ok" and f"not finite from step {first_bad} on" in gap.evidence, gap.evidence
