"""bnviz.watch on models bnviz did not write: what it stores against independent hooks and the
modules' own buffers, training unchanged bit for bit, runs that outlive a killed process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bnviz
from bnviz.store import RunFileError
from test_recorder import TinyResNet, TinyTransformer, independent_hooks, per_channel

ROOT = Path(__file__).resolve().parents[1]


def _batches(n: int, seed: int = 0, shape=(8, 3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=g) * 2 + 1, torch.randint(0, 10, (shape[0],), generator=g)) for _ in range(n)]


def _train(model: nn.Module, batches, w=None) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if w is not None:
            w.step(loss=loss.item())
    return losses


def test_watch_stores_what_independent_hooks_see_at_steps_0_k_2k(tmp_path):
    batches = _batches(13)
    names = ["stem.1", "layer1.0.bn1", "layer1.1.downsample.1"]
    # The oracle: the same training, with plain forward hooks at the recorded steps.
    torch.manual_seed(0)
    model = TinyResNet()
    seen: dict[int, dict] = {}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    oracle_losses = []
    for step, (x, y) in enumerate(batches):
        holder = {}
        if step % 4 == 0:
            out = independent_hooks(model, names, lambda: holder.setdefault("out", model(x)))
            seen[step] = out
            logits = holder["out"]
        else:
            logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        oracle_losses.append(loss.item())

    torch.manual_seed(0)
    model = TinyResNet()
    with bnviz.watch(model, tmp_path / "run", every=4) as w:
        losses = _train(model, batches, w)
    assert losses == oracle_losses                                   # watching changed nothing
    run = bnviz.open_run(tmp_path / "run")
    assert run.status == "finished"
    assert run.norm_layers[:2] == ["stem.1", "layer1.0.bn1"]
    for name in names:
        steps, mean, var = run.batch_stats(name)
        assert steps.tolist() == [0, 4, 8, 12]
        _, rmean, rvar = run.running_stats(name)
        for i, s in enumerate(steps.tolist()):
            ref = seen[s][name]
            m, v = per_channel("batch", ref["input"].numpy())
            np.testing.assert_allclose(mean[i], m, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(var[i], v, rtol=1e-4, atol=1e-6)
            np.testing.assert_array_equal(rmean[i], ref["buffers"]["running_mean"].numpy())
            np.testing.assert_array_equal(rvar[i], ref["buffers"]["running_var"].numpy())
        _, weight, bias = run.params(name)
        np.testing.assert_array_equal(weight[0], np.ones(weight.shape[1], np.float32))
    steps, values = run.scalars("loss")
    assert steps.tolist() == list(range(13))
    np.testing.assert_array_equal(values, np.asarray(losses))
    h = run.history()
    assert h.layer_names == run.norm_layers and len(h.snapshots) == 4


def test_training_with_and_without_watch_is_identical_bit_for_bit(tmp_path):
    batches = _batches(10, seed=3)

    def final(watched: bool):
        torch.manual_seed(1)
        model = TinyResNet()
        if watched:
            holdout = _batches(1, seed=9)[0]
            with bnviz.watch(model, tmp_path / "w", every=3, holdout=holdout) as w:
                losses = _train(model, batches, w)
        else:
            losses = _train(model, batches)
        return losses, [t.clone() for t in model.state_dict().values()], torch.get_rng_state()

    (la, sa, ra), (lb, sb, rb) = final(False), final(True)
    assert la == lb
    for a, b in zip(sa, sb):
        assert torch.equal(a, b)
    assert torch.equal(ra, rb)


@pytest.mark.parametrize("where", ["the model", "a block inside it"])
def test_a_compiled_model_is_recorded_under_its_own_names_as_eager_hooks_see_it(tmp_path, where):
    # torch.compile traced the recorder's hooks and failed on their Python state; they now run
    # outside the graph. backend="eager": TorchDynamo's tracing, the part that failed, without
    # waiting for a C++ compiler.
    batches = _batches(9, seed=4)
    torch.manual_seed(0)
    eager_model = TinyResNet()
    seen = {}
    opt = torch.optim.SGD(eager_model.parameters(), lr=0.05, momentum=0.9)
    for step, (x, y) in enumerate(batches):
        holder = {}
        seen[step] = independent_hooks(eager_model, ["layer1.0.bn1"], lambda: holder.setdefault("out", eager_model(x)))
        loss = nn.functional.cross_entropy(holder["out"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    torch.manual_seed(0)
    model = TinyResNet()
    if where == "the model":
        watched = trained = torch.compile(model, backend="eager")
    else:
        model.layer1 = torch.compile(model.layer1, backend="eager")
        watched = trained = model
    with bnviz.watch(watched, tmp_path / "run", every=4) as w:
        _train(trained, batches, w)
    run = bnviz.open_run(tmp_path / "run")
    names = run.norm_layers
    # the names model.named_modules() gives: a compiled block's inner modules carry "_orig_mod"
    name = "layer1.0.bn1" if where == "the model" else "layer1._orig_mod.0.bn1"
    assert "stem.1" in names and name in names, names
    steps, mean, var = run.batch_stats(name)
    assert steps.tolist() == [0, 4, 8]
    for i, s in enumerate(steps.tolist()):
        m, v = per_channel("batch", seen[s]["layer1.0.bn1"]["input"].numpy())
        np.testing.assert_allclose(mean[i], m, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var[i], v, rtol=1e-4, atol=1e-6)


def test_a_transformer_is_recorded_at_its_layer_norms(tmp_path):
    torch.manual_seed(0)
    model = TinyTransformer()
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with bnviz.watch(model, tmp_path / "t", every=2) as w:
        for _ in range(5):
            tokens = torch.randint(0, 20, (4, 7), generator=g)
            loss = nn.functional.cross_entropy(model(tokens), tokens[:, 0])
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.step(loss=loss)
    run = bnviz.open_run(tmp_path / "t")
    assert run.norm_layers == ["block.norm1", "block.norm2", "norm"]
    assert [l.family for l in run.layers] == ["layer", "layer", "rms"]
    steps, mean, var = run.batch_stats("norm")
    assert steps.tolist() == [0, 2, 4] and mean.shape == (3, 16)
    assert run.layer_state("block.norm1")["count"][0] == 16          # LayerNorm: one statistic over d=16 values


def test_a_model_without_norm_layers_is_recorded_at_its_activations(tmp_path):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with bnviz.watch(model, tmp_path / "plain", every=1) as w:
        for _ in range(3):
            model(torch.randn(5, 4)).sum().backward()
            w.step()
    run = bnviz.open_run(tmp_path / "plain")
    assert run.norm_layers == [] and [l.name for l in run.layers] == ["1"]
    h = run.history()
    assert (0, "post_activation") in h.snapshots[0].taps


def test_bad_arguments_explain_themselves(tmp_path):
    model = TinyResNet()
    with pytest.raises(ValueError, match="every"):
        bnviz.watch(model, tmp_path / "a", every=0)
    with pytest.raises(TypeError, match="nn.Module"):
        bnviz.watch("not a model", tmp_path / "a")
    with bnviz.watch(model, tmp_path / "a") as w:
        with pytest.raises(TypeError, match="loss"):
            w.step(loss="high")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        bnviz.watch(model, tmp_path / "a")
    bnviz.watch(model, tmp_path / "a", overwrite=True).close()


WRITER = textwrap.dedent("""
    import sys, torch
    from torch import nn
    import bnviz
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    w = bnviz.watch(model, sys.argv[1], every=5)
    step = 0
    while True:
        x = torch.randn(16, 10)
        loss = model(x).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        w.step(loss=loss.item(), lr=0.01)
        step += 1
        if step % 50 == 0:
            print(step, flush=True)
""")


def _start_writer(run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)


def test_a_reader_follows_the_writer_and_sigkill_leaves_every_committed_step(tmp_path):
    run_dir = tmp_path / "live"
    proc = _start_writer(run_dir)
    try:
        seen_last = []
        deadline = time.monotonic() + 60
        while len(seen_last) < 5 and time.monotonic() < deadline:
            try:
                run = bnviz.open_run(run_dir)
                steps, values = run.scalars("loss")
                if len(steps):
                    assert run.status == "running"
                    assert np.all(np.diff(steps) > 0) and np.isfinite(values).all()
                    bsteps, mean, var = run.batch_stats("1")
                    assert mean.shape == var.shape == (len(bsteps), 32)
                    if not seen_last or steps[-1] > seen_last[-1]:
                        seen_last.append(int(steps[-1]))
            except (FileNotFoundError, KeyError):
                pass                                                  # not created yet / no step yet
            time.sleep(0.2)
        assert len(seen_last) >= 5, "the reader never saw the run grow"
        assert seen_last == sorted(seen_last)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    run = bnviz.open_run(run_dir)
    assert run.status == "stopped"
    steps, _ = run.scalars("loss")
    assert steps[-1] >= seen_last[-1]                               # everything seen before the kill is still there
    snap_steps, _, _ = run.batch_stats("1")
    assert len(snap_steps) and snap_steps[0] == 0 and all(s % 5 == 0 for s in snap_steps.tolist())


def test_a_damaged_run_file_names_itself(tmp_path):
    model = TinyResNet()
    with bnviz.watch(model, tmp_path / "r", every=1) as w:
        model(torch.randn(2, 3, 8, 8))
        w.step(loss=1.0)
    f = tmp_path / "r" / "bnviz-run.sqlite"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3])
    with pytest.raises(RunFileError, match="bnviz-run.sqlite"):
        bnviz.open_run(tmp_path / "r").history()


DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    from torch import nn
    import bnviz

    def main(rank, world, run_dir, port):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(
            nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(rank)
        with bnviz.watch(model, run_dir, every=2) as w:
            for _ in range(5):
                x = torch.randn(8, 6, generator=g) + rank      # each rank sees other data
                loss = model(x).pow(2).mean()
                opt.zero_grad(); loss.backward(); opt.step()
                w.step(loss=loss.item())
        dist.destroy_process_group()

    if __name__ == "__main__":
        import torch.multiprocessing as mp
        mp.spawn(main, args=(2, sys.argv[1], int(sys.argv[2])), nprocs=2)
""")


@pytest.mark.slow
def test_each_process_of_a_distributed_job_records_its_rank(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(script), str(tmp_path / "ddp"), str(port)], check=True, env=env, timeout=120)
    runs = [bnviz.open_run(tmp_path / "ddp", rank=r) for r in (0, 1)]
    assert [r.meta["rank"] for r in runs] == [0, 1] and all(r.meta["world_size"] == 2 for r in runs)
    assert runs[0].norm_layers == ["1"]                                # the names inside DDP's wrapper
    m0, m1 = runs[0].batch_stats("1")[1], runs[1].batch_stats("1")[1]
    assert not np.allclose(m0, m1)                                     # each rank saw its own batches
    assert bnviz.open_run(tmp_path / "ddp").meta["rank"] == 0
