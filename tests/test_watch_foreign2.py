"""Second sweep of bnviz.watch / open_run / the BN doctor on models and loops bnviz did not write:
gradient checkpointing, TorchScript and torch.fx modules, hooks of the user's own, norm layers called
with keywords or giving tuples, parametrized gamma, shared modules, DataParallel, float16, odd
inputs, odd calls of ``w.step`` and odd run folders, eval-only training, norm layers swapped after
watching, channel counts that change, large activations and a ResNet-50-deep model.

Oracles as in tests/test_watch_foreign.py (whose helpers are reused): plain forward hooks
(:class:`Spy`), the modules' own buffers and parameters, float64 arithmetic, and a bare run of the
same loop compared bit for bit.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
import torch.utils.checkpoint as checkpoint
from torch import nn
from torch.nn.utils import parametrize

import bnviz
from bnviz.store import RUN_FILE
from tests.test_watch_foreign import Spy, _mlp, assert_doctor_reads_it, assert_recorded_as_spied, oracle, run_cli

torch.set_num_threads(1)


class KwSpy(Spy):
    """:class:`Spy` that also sees a module called with keywords (``bn(input=x)``)."""

    def __init__(self, root: nn.Module, names: list[str]):
        self.root, self.step, self.calls = root, 0, {n: [] for n in names}
        modules = dict(root.named_modules())
        self.handles = []
        for n in names:
            hook = self._hook(n, modules[n])
            self.handles.append(modules[n].register_forward_hook(
                lambda m, args, kwargs, out, hook=hook: hook(m, args or tuple(kwargs.values()), out), with_kwargs=True))


def hook_counts(model: nn.Module) -> list[tuple[int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def sgd_loop(inputs, steps_per_update: int = 1):
    """A loop of SGD steps on ``inputs``; ``run_loop(model, w=None, spy=None)`` -> losses. With
    ``steps_per_update`` > 1 it calls ``w.step`` that many times per optimizer step."""
    def run_loop(model, w=None, spy=None):
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        losses = []
        for x in inputs:
            loss = model(x).float().pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            for _ in range(steps_per_update if w is not None else 0):
                w.step(loss=loss)
                spy.next()
        return losses
    return run_loop


def watched_and_bare(tmp_path, make, inputs, names, every=1, **loop):
    """The bare losses, the watched losses, the watched model, its spy and its run."""
    run_loop = sgd_loop(inputs, **loop)
    torch.manual_seed(0)
    bare = run_loop(make())
    torch.manual_seed(0)
    model = make()
    spied = model.module if isinstance(model, nn.DataParallel) else model
    before = hook_counts(spied)                                 # the user's own hooks, if any
    spy = KwSpy(spied, names)
    with bnviz.watch(model, tmp_path / "run", every=every) as w:
        losses = run_loop(model, w, spy)
    spy.close()
    assert hook_counts(spied) == before
    return bare, losses, spied, spy, bnviz.open_run(tmp_path / "run")


def _inputs(n=4, shape=(6, 4), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) * 2 + 1 for _ in range(n)]


# ----- gradient checkpointing ----------------------------------------------------------------------
class Checkpointed(nn.Module):
    """Two BN blocks run under torch.utils.checkpoint: their forward is run again in backward."""

    def __init__(self, reentrant: bool):
        super().__init__()
        self.reentrant = reentrant
        self.a = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = checkpoint.checkpoint(self.a, x, use_reentrant=self.reentrant)
        return self.head(checkpoint.checkpoint(self.b, h, use_reentrant=self.reentrant))


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_gradient_checkpointing_records_the_forward_not_its_recomputation_in_backward(tmp_path, reentrant):
    inputs = [x.requires_grad_() for x in _inputs()]            # reentrant checkpointing needs an input with grad
    bare, losses, model, spy, run = watched_and_bare(tmp_path, lambda: Checkpointed(reentrant), inputs, ["a.1", "b.1"])
    assert losses == bare
    assert [len(calls) for calls in spy.calls.values()] == [8, 8]   # each BN ran twice a step: forward, recompute
    assert_recorded_as_spied(run, spy, model, [0, 1, 2, 3])
    # the buffers right after the forward's call, before the recomputation updated them again
    assert run.layer_state("a.1")["num_batches_tracked"].tolist() == [1, 3, 5, 7]
    assert_doctor_reads_it(run)


# ----- TorchScript, torch.fx -------------------------------------------------------------------------
class PartlyScripted(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.b = torch.jit.script(nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU()))

    def forward(self, x):
        return self.b(self.a(x))


def test_a_scripted_submodule_is_named_in_a_warning_and_the_rest_is_recorded(tmp_path):
    with pytest.warns(UserWarning, match=r"\bb of PartlyScripted is a TorchScript module.*b\.1 \(BatchNorm1d\)"):
        bare, losses, model, spy, run = watched_and_bare(tmp_path, PartlyScripted, _inputs(), ["a.1"])
    assert losses == bare
    assert run.norm_layers == ["a.1"]
    assert_recorded_as_spied(run, spy, model, [0, 1, 2, 3])


def test_a_whole_scripted_model_with_a_holdout_trains_unchanged_and_says_why_nothing_is_recorded(tmp_path):
    """A ScriptModule refuses Python hooks: the held-out evaluation's input hook made
    bnviz.watch raise "register_forward_pre_hook is not supported on ScriptModules"."""
    def make():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(_mlp())

    inputs = _inputs()
    torch.manual_seed(0)
    bare = sgd_loop(inputs)(make())
    torch.manual_seed(0)
    model = make()
    with pytest.warns(UserWarning, match="Sequential is a TorchScript module.*none of its layers can be recorded"):
        w = bnviz.watch(model, tmp_path / "s", every=1, holdout=(inputs[0], torch.zeros(6, 8)))
    with w:
        losses = sgd_loop(inputs)(model, w, Spy(nn.Sequential(), []))
    assert losses == bare
    run = bnviz.open_run(tmp_path / "s")
    assert run.status == "finished" and run.norm_layers == [] and run.scalars("loss")[1].tolist() == bare


def test_an_fx_graph_module_is_recorded_under_its_own_names(tmp_path):
    bare, losses, model, spy, run = watched_and_bare(
        tmp_path, lambda: torch.fx.symbolic_trace(_mlp()), _inputs(), ["1", "4"], every=2)
    assert losses == bare and isinstance(model, torch.fx.GraphModule)
    assert run.norm_layers == ["1", "4"]
    assert_recorded_as_spied(run, spy, model, [0, 2])


# ----- what the forward returns, hooks of the user's own --------------------------------------------
class Heads(nn.Module):
    """A forward returning a dict of a tensor and a tuple; the BN is called with a keyword."""

    def __init__(self):
        super().__init__()
        self.lin, self.bn, self.act = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU()
        self.ln = nn.LayerNorm(8)

    def forward(self, x):
        h = self.act(self.bn(input=self.lin(x)))
        return {"y": self.ln(input=h), "aux": (h.mean(),)}


def test_norm_layers_called_with_keywords_in_a_model_returning_a_dict_are_recorded(tmp_path):
    """``self.bn(input=x)`` gave the hooks no positional input: nothing was recorded, silently."""
    class Model(Heads):
        def forward(self, x):
            return super().forward(x)["y"]

    bare, losses, model, spy, run = watched_and_bare(tmp_path, Model, _inputs(), ["bn", "ln"])
    assert losses == bare
    assert_recorded_as_spied(run, spy, model, [0, 1, 2, 3])
    assert run.layers[0].activation == "ReLU"
    # the ReLU, called positionally on the BN's output, is paired with it: its output is recorded
    hist = run.history().snapshots.items[0].taps
    relu_n = hist[(0, "post_activation")].n
    assert relu_n == 6 * 8 and hist[(0, "post_activation")].percentiles[0] >= 0


def test_user_hooks_that_change_inputs_and_outputs_are_recorded_as_the_model_sees_them(tmp_path):
    """A forward pre-hook shifting BN's input, a forward hook scaling its output, and one on the
    second BN turning its output into a tuple (a custom layer's (y, stats)): the statistics are
    those of what the layer normalized; the tuple made the hooks drop the whole layer."""
    class Pick(nn.Module):
        def forward(self, t):
            return t[0]

    def make():
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.BatchNorm1d(8),
                              Pick())
        model[1].register_forward_pre_hook(lambda m, args: (args[0] * 3 + 2,))
        model[1].register_forward_hook(lambda m, args, out: out * 0.5)
        model[4].register_forward_hook(lambda m, args, out: (out, out.detach().mean()))
        return model

    bare, losses, model, spy, run = watched_and_bare(tmp_path, make, _inputs(), ["1", "4"], every=2)
    assert losses == bare
    assert run.norm_layers == ["1", "4"]
    assert_recorded_as_spied(run, spy, model, [0, 2])
    first = spy.first("1", 0)["x"]                                 # the pre-hook's output: what BN normalized
    np.testing.assert_allclose(run.batch_stats("1")[1][0], oracle(model[1], first)["mean"].numpy(), rtol=1e-5)
    taps = run.history().snapshots.items[0].taps
    assert (0, "norm_output") in taps and (1, "norm_output") not in taps
    assert_doctor_reads_it(run)


def test_a_norm_layer_with_a_parametrized_weight_records_the_weight_it_used(tmp_path):
    """torch.nn.utils.parametrize moves gamma out of the module's parameters: it was recorded as
    absent (NaN) although the layer is affine, and the layer's parametrization module was taken
    for the activation after it."""
    class Positive(nn.Module):
        def forward(self, w):
            return w.abs() + 0.5

    def make():
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
        parametrize.register_parametrization(model[1], "weight", Positive())
        return model

    bare, losses, model, spy, run = watched_and_bare(tmp_path, make, _inputs(), ["1"])
    assert losses == bare
    _, weight, bias = run.params("1")
    for i, s in enumerate([0, 1, 2, 3]):
        call = spy.first("1", s)["params"]
        want = call["parametrizations.weight.original"].abs() + 0.5
        np.testing.assert_allclose(weight[i], want.numpy(), rtol=1e-6)
        np.testing.assert_allclose(bias[i], call["bias"].numpy(), rtol=1e-6)
    assert run.layers[0].activation == "ReLU" and run.layers[0].affine
    assert not run.layer_state("1")["frozen"].any()
    nonfinite = [f for f in assert_doctor_reads_it(run) if f.check == "nonfinite"][0]
    assert nonfinite.severity == "ok"


# ----- shared modules, two watches, wrappers -------------------------------------------------------
def test_a_bn_shared_by_two_watched_models_is_named_in_a_warning(tmp_path):
    bn = nn.BatchNorm1d(8)
    a = nn.Sequential(nn.Linear(4, 8), bn, nn.ReLU())
    b = nn.Sequential(nn.Linear(3, 8), bn, nn.Tanh())
    with bnviz.watch(a, tmp_path / "a", every=1) as wa:
        with pytest.warns(UserWarning, match=f"1 of Sequential is also in the model watched into {tmp_path / 'a'}"):
            wb = bnviz.watch(b, tmp_path / "b", every=1)
        with wb:
            for _ in range(2):
                (a(torch.randn(5, 4)).sum() + b(torch.randn(5, 3)).sum()).backward()
                wa.step()
                wb.step()
    # once closed, the same model watched again alone is not warned about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bnviz.watch(b, tmp_path / "c", every=1).close()


def test_two_watches_of_one_model_at_once_each_record_their_own_cadence(tmp_path):
    torch.manual_seed(0)
    model = _mlp()
    spy = Spy(model, ["1", "4"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # one model watched twice: nothing to warn about
        with bnviz.watch(model, tmp_path / "w1", every=1) as w1, bnviz.watch(model, tmp_path / "w2", every=2) as w2:
            for x in _inputs(5):
                model(x).pow(2).mean().backward()
                w1.step()
                w2.step()
                spy.next()
    spy.close()
    assert_recorded_as_spied(bnviz.open_run(tmp_path / "w1"), spy, model, [0, 1, 2, 3, 4])
    assert_recorded_as_spied(bnviz.open_run(tmp_path / "w2"), spy, model, [0, 2, 4])


def test_data_parallel_on_cpu_is_recorded_under_the_inner_model_names(tmp_path):
    bare, losses, model, spy, run = watched_and_bare(tmp_path, lambda: nn.DataParallel(_mlp()), _inputs(), ["1", "4"])
    assert losses == bare
    assert run.norm_layers == ["1", "4"]
    assert_recorded_as_spied(run, spy, model, [0, 1, 2, 3])


def test_a_model_without_norm_layers_records_its_activations_and_the_doctor_has_nothing_to_check(tmp_path):
    make = lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))  # noqa: E731
    bare, losses, model, _, run = watched_and_bare(tmp_path, make, _inputs(), [])
    assert losses == bare
    assert run.norm_layers == [] and [info.activation for info in run.layers] == ["ReLU", "Tanh"]
    assert run.snapshot_steps.tolist() == [0, 1, 2, 3]
    assert bnviz.doctor.diagnose(run) == []
    status, out, _ = run_cli("doctor", str(tmp_path / "run"))
    assert status == 0 and "0 problem(s)" in out


# ----- dtypes and inputs -------------------------------------------------------------------------------
def test_a_float16_model_on_the_cpu(tmp_path):
    inputs = [x.half() for x in _inputs()]
    bare, losses, model, spy, run = watched_and_bare(tmp_path, lambda: _mlp().half(), inputs, ["1", "4"])
    assert losses == bare
    assert_recorded_as_spied(run, spy, model, [0, 1, 2, 3], rtol=2e-3, atol=2e-3)
    assert_doctor_reads_it(run)


def test_non_contiguous_inputs_that_require_grad(tmp_path):
    g = torch.Generator().manual_seed(3)
    # channels-last-like permuted and strided views, requiring grad, straight into BatchNorm2d
    inputs = [(torch.randn(5, 9, 6, 4, generator=g) * 2).permute(0, 3, 1, 2)[:, :, ::2].requires_grad_()
              for _ in range(4)]
    assert not inputs[0].is_contiguous()
    make = lambda: nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))  # noqa: E731
    bare, losses, model, spy, run = watched_and_bare(tmp_path, make, inputs, ["0"])
    assert losses == bare
    assert_recorded_as_spied(run, spy, model, [0, 1, 2, 3])
    assert run.layer_state("0")["count"].tolist() == [5 * 5 * 6] * 4


# ----- odd calls, odd arguments -------------------------------------------------------------------------
def test_step_called_twice_per_optimizer_step_counts_both_and_before_any_forward_records_scalars_only(tmp_path):
    bare, losses, model, spy, run = watched_and_bare(tmp_path, _mlp, _inputs(), ["1"], every=2, steps_per_update=2)
    assert losses == bare
    # the first call of each pair comes after the forward: steps 0, 2, 4, 6 (odd ones had none)
    assert_recorded_as_spied(run, spy, model, [0, 2, 4, 6], ["1"])
    assert run.scalars("loss")[0].tolist() == list(range(8))
    w = bnviz.watch(model, tmp_path / "early", every=1)
    w.step(lr=0.1)                                             # before any forward
    model(torch.randn(4, 4))
    w.step(lr=0.1)
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.step(lr=0.1)
    early = bnviz.open_run(tmp_path / "early")
    assert early.batch_stats("1")[0].tolist() == [1] and early.scalars("lr")[0].tolist() == [0, 1]


@pytest.mark.parametrize("every", [0, -1, 2.5, "5", True, None, 2.0])
def test_every_that_is_not_a_whole_number_of_steps_is_refused_by_name(tmp_path, every):
    with pytest.raises(ValueError, match=f"every must be a whole number of steps >= 1, got {every!r}"):
        bnviz.watch(_mlp(), tmp_path / "e", every=every)
    assert not (tmp_path / "e").exists()


def test_a_scalar_too_large_for_a_float_is_named(tmp_path):
    model = _mlp()
    with bnviz.watch(model, tmp_path / "s", every=1) as w:
        model(torch.randn(4, 4))
        with pytest.raises(ValueError, match=r"w.step\(tokens=...\) is a whole number too large for a float"):
            w.step(tokens=10 ** 400)
        w.step(tokens=10 ** 300)
    assert bnviz.open_run(tmp_path / "s").scalars("tokens")[1].tolist() == [1e300]


def _problem(run_dir):
    """The error bnviz.watch raises for ``run_dir``: with its message, and no frame of pathlib's."""
    with pytest.raises(Exception) as err:
        bnviz.watch(_mlp(), run_dir, every=1)
    return err


@pytest.mark.parametrize("what", ["an existing file", "a path under a file", "None", "a number", "empty"])
def test_a_run_dir_that_cannot_be_a_folder_is_refused_at_watch_naming_it(tmp_path, what):
    """An existing file or a path under one failed only at the first w.step, with pathlib's bare
    "[Errno 17] File exists"; None or a number with pathlib's TypeError; "" recorded into the
    current folder."""
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    run_dir, kind, words = {
        "an existing file": (afile, FileExistsError, f"run_dir {afile} is a file, not a folder"),
        "a path under a file": (afile / "run", NotADirectoryError, f"{afile} is a file, not a folder"),
        "None": (None, TypeError, "run_dir must be a folder path.*got NoneType"),
        "a number": (5, TypeError, "run_dir must be a folder path.*got int"),
        "empty": ("", ValueError, "run_dir is empty"),
    }[what]
    err = _problem(run_dir)
    assert err.type is kind and err.match(words)
    assert afile.read_text() == "mine"
    assert "pathlib" not in os.path.basename(err.traceback[-1].path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_dir_is_refused_at_watch(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert _problem(locked).match(f"run_dir {locked} is not writable")
        assert _problem(locked / "sub").match(f"run_dir {locked / 'sub'} cannot be made")
    finally:
        locked.chmod(0o755)


def test_overwrite_must_be_a_bool_so_a_string_does_not_replace_a_run(tmp_path):
    model = _mlp()
    with bnviz.watch(model, tmp_path / "r", every=1) as w:
        model(torch.randn(4, 4))
        w.step(loss=1.0)
    with pytest.raises(TypeError, match="overwrite must be True or False, got 'no'"):
        bnviz.watch(model, tmp_path / "r", overwrite="no")
    assert bnviz.open_run(tmp_path / "r").scalars("loss")[1].tolist() == [1.0]


# ----- loops that record nothing, layers that change -------------------------------------------------
def test_training_entirely_in_eval_mode_warns_once_that_nothing_is_recorded(tmp_path):
    inputs = _inputs()
    torch.manual_seed(0)
    bare = sgd_loop(inputs)(_mlp().eval())
    torch.manual_seed(0)
    model = _mlp().eval()
    with pytest.warns(RuntimeWarning, match="step 0 had forward passes in eval mode only.*model.train()") as caught:
        with bnviz.watch(model, tmp_path / "ev", every=1) as w:
            losses = sgd_loop(inputs)(model, w, Spy(model, []))
    assert losses == bare
    assert len([c for c in caught if "eval mode" in str(c.message)]) == 1
    run = bnviz.open_run(tmp_path / "ev")
    assert len(run.snapshot_steps) == 0 and run.scalars("loss")[1].tolist() == bare
    assert_doctor_reads_it(run)


def test_validation_only_steps_after_training_began_are_not_warned_about(tmp_path):
    model = _mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with bnviz.watch(model, tmp_path / "v", every=1) as w:
            model(torch.randn(4, 4))
            w.step()
            model.eval()
            model(torch.randn(4, 4))                            # an evaluation step of its own
            w.step()
    assert bnviz.open_run(tmp_path / "v").batch_stats("1")[0].tolist() == [0]


def test_norm_layers_replaced_after_watching_began_are_warned_about(tmp_path):
    model = _mlp()
    with bnviz.watch(model, tmp_path / "swap", every=1) as w:
        model(torch.randn(4, 4))
        w.step()
        model[1] = nn.BatchNorm1d(8)                            # e.g. convert_sync_batchnorm, a new head
        model[4] = nn.BatchNorm1d(8)
        with pytest.warns(RuntimeWarning, match="training forward of step 1 reached none of the 2 normalization"):
            model(torch.randn(4, 4))
            w.step()
    assert bnviz.open_run(tmp_path / "swap").batch_stats("1")[0].tolist() == [0]


def test_a_norm_layer_whose_channel_count_changes_does_not_stop_training(tmp_path):
    """torch lets InstanceNorm (no affine) and BatchNorm (no affine, no running statistics) take
    any number of channels; the run store refused the second count and training stopped."""
    model = nn.Sequential(nn.InstanceNorm1d(4), nn.ReLU(), nn.BatchNorm1d(3, affine=False, track_running_stats=False))
    g = torch.Generator().manual_seed(4)
    xs = [torch.randn(3, c, 7, generator=g) + k for k, c in enumerate((4, 6, 4, 5))]
    spy = Spy(model, ["0", "2"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with bnviz.watch(model, tmp_path / "c", every=1) as w:
            for x in xs:
                model(x)
                w.step()
                spy.next()
    spy.close()
    ours = sorted(str(c.message) for c in caught if "bnviz" in str(c.message))
    assert len(ours) == 2                                       # once per layer, not once per step
    assert "layer '0' normalized 6 channels at step 1, 4 at its first recorded step" in ours[0]
    assert "layer '2' normalized 6 channels at step 1" in ours[1]
    run = bnviz.open_run(tmp_path / "c")
    assert run.snapshot_steps.tolist() == [0, 1, 2, 3]          # histograms at every step
    assert_recorded_as_spied(run, spy, model, [0, 2])              # channel statistics where there were 4
    assert_doctor_reads_it(run)


# ----- size and depth --------------------------------------------------------------------------------
def test_large_activations_hold_no_hooks_nor_copies_between_recorded_steps(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(64), nn.ReLU())
    x = torch.randn(2, 64, 128, 128) * 3 + 1
    spy = Spy(model, ["0"])
    spied = hook_counts(model)
    with bnviz.watch(model, tmp_path / "big", every=3) as w:
        for step in range(7):
            model(x)
            w.step()
            spy.next()
            due = (step + 1) % 3 == 0
            assert (hook_counts(model) != spied) == due, step     # unrecorded steps run hook-free
            assert not any(h.tensors or h.originals for h in w.recorder._hooks)   # no copy held after a step
            assert w.recorder.pending == 0
    spy.close()
    run = bnviz.open_run(tmp_path / "big")
    assert_recorded_as_spied(run, spy, model, [0, 3, 6])
    taps = run.history().snapshots.items[0].taps
    assert taps[(0, "norm_output")].n == x.numel()


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, 4 * mid, 1, bias=False), nn.BatchNorm2d(4 * mid)
        self.relu = nn.ReLU(inplace=True)
        self.down = (nn.Sequential(nn.Conv2d(cin, 4 * mid, 1, stride, bias=False), nn.BatchNorm2d(4 * mid))
                     if stride != 1 or cin != 4 * mid else None)

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet50ish(nn.Module):
    """ResNet-50's layout (3, 4, 6, 3 bottlenecks, 53 BatchNorms), very narrow."""

    def __init__(self, width: int = 2):
        super().__init__()
        self.conv1, self.bn1, self.relu = nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        cin = width
        for i, (blocks, mid) in enumerate(zip((3, 4, 6, 3), (width, 2 * width, 4 * width, 8 * width))):
            stage = []
            for j in range(blocks):
                stage.append(Bottleneck(cin, mid, 2 if j == 0 and i > 0 else 1))
                cin = 4 * mid
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.fc = nn.Linear(cin, 5)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))


def test_a_resnet50_deep_model_records_all_53_norm_layers_and_the_doctor_reads_them(tmp_path):
    probe = ResNet50ish()
    names = [n for n, m in probe.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(names) == 53
    bare, losses, model, spy, run = watched_and_bare(tmp_path, ResNet50ish, _inputs(3, (4, 3, 8, 8)), names, every=2)
    assert losses == bare
    assert run.norm_layers == names
    assert_recorded_as_spied(run, spy, model, [0, 2])
    findings = assert_doctor_reads_it(run)
    assert {f.layer for f in findings} == set(names)
    assert run.history().layer_names == names
    status, out, _ = run_cli("doctor", str(tmp_path / "run"))
    assert status in (0, 1) and "layer4.2.bn3" in out
    assert (tmp_path / "run" / RUN_FILE).stat().st_size < 4 << 20
