"""The benchmark code runs and writes every key; not a timed test (``make bench`` measures).

``python -m benchmarks --quick`` uses tiny repeat counts and short runs, so its numbers mean
nothing; what is checked is that each group runs end to end (real browser and kaleido included)
and that latest.json has the documented keys as finite numbers.
"""
import json
import math
import subprocess
import sys

import torch

from conftest import ROOT

REQUIRED = ("instrumentation_overhead", "reference_bn_vs_torch", "export_png_s", "default_run_s",
            "default_run_vs_bare", "first_chart_s", "redraw_ms", "history_mb_50k_steps",
            "watch_overhead_resnet18", "open_run_50k_s")


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_baselines_do_the_same_training_work():
    """The ratios' denominators train the same model on the same batches: the bare loop and
    train(record=False) end with the weights train() ends with, bit for bit (so recording and
    evaluating change nothing in the training itself). BN's running statistics of a recorded run
    are replayed from its recorded batch statistics (bnviz.batch_trace, so that a momentum change
    needs no retraining): equal to torch's own to float32 rounding, not bit for bit."""
    from benchmarks.training import bare_loop
    from bnviz.config import Config
    from bnviz.data import load
    from bnviz.train import train

    config = Config(steps=25, width=16, depth=2, record_every=5, eval_every=10)
    data = load(config)
    recorded = train(config, dataset=data)
    unrecorded = train(config, dataset=data, record=False)
    bare = bare_loop(config, data)
    assert len(recorded.history.snapshots) > 1 and len(recorded.history.evals) > 1
    assert len(unrecorded.history.snapshots) == 0 and len(unrecorded.history.evals) == 0
    assert len(unrecorded.history.losses) == config.steps
    reference = _state(recorded.model)
    for other in (unrecorded.model, bare):
        state = _state(other)
        assert state.keys() == reference.keys()
        for key, value in reference.items():
            if key.endswith(("running_mean", "running_var")):
                torch.testing.assert_close(state[key], value, rtol=1e-6, atol=1e-7, msg=key)
            else:
                assert torch.equal(state[key], value), key


def test_quick_run_writes_every_key(tmp_path):
    # The browser group and the others run side by side: two processes, as `--only` allows.
    parts = {"browser": "browser", "core": "norms,training,watch,export,views"}
    procs = {name: subprocess.Popen([sys.executable, "-m", "benchmarks", "--quick", "--only", groups,
                                     "--out", str(tmp_path / f"{name}.json")], cwd=ROOT, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, groups in parts.items()}
    printed, result = "", {"detail": {}}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]
        part = json.loads((tmp_path / f"{name}.json").read_text())
        assert part["errors"] == {}
        assert part["machine"]["torch_threads"] == 1
        assert len(part["machine"]["loadavg_start"]) == 3 and len(part["machine"]["loadavg_end"]) == 3
        result.update({k: v for k, v in part.items() if k != "detail"})
        result["detail"].update(part["detail"])
        printed += stdout
    for key in REQUIRED:
        assert isinstance(result[key], (int, float)) and math.isfinite(result[key]) and result[key] > 0, key
        assert key in printed                                     # the printed table has a row per key
        detail = result["detail"][key]
        assert detail["min"] <= detail["median"] <= detail["max"]
    assert result["detail"]["redraw_ms"]["control_kinds"], "no display control found on the histograms page"
    watched = result["detail"]["watch_overhead_resnet18"]        # quick: 41 steps, every 20
    assert watched["recorded_steps"] == [0, 20, 40] and watched["parts_of_a_step"]["recorded_steps"] == 3
    assert result["detail"]["open_run_50k_s"]["kept"] == {"snapshots": 15, "losses": 300, "layers": 2}


def test_table_and_readme_markdown_have_a_row_per_key():
    from benchmarks import Result, interleaved, machine, ratios
    from benchmarks.__main__ import markdown, table

    t = interleaved({"a": lambda: sum(range(1000)), "b": lambda: sum(range(10))}, rounds=3)
    assert all(len(v) == 3 for v in t.cpu.values()) and all(len(v) == 3 for v in t.wall.values())
    results = [Result("some_ratio", ratios([2.0, 3.0], [1.0, 1.0]), "x", "a ratio", target=2.0),
               Result("some_ms", [120.0, 80.0, 100.0], "ms", "a latency")]
    assert results[0].value == 2.5 and results[0].met is False and results[1].met is None
    info = {"started": "2026-01-01T00:00:00", "machine": {**machine(), "loadavg_start": [0.5, 0, 0],
                                                           "loadavg_end": [0.7, 0, 0]}}
    md, text = markdown(results, info), table(results)
    assert "| `some_ratio` | 2.500 x |" in md and "MISSED" in md and "| `some_ms` | 100 ms |" in md
    assert "some_ratio" in text and "some_ms" in text
