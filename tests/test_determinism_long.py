"""Same settings, same numbers; long runs, bounded memory.

- Determinism: a configuration and seed give a bit-identical history in one process (whatever torch's
  global RNG did in between: sessions of a server share it), and in a separate process. Whether one
  and two intra-op threads agree is reported, not asserted (float sums may be reordered).
- Long runs: 50,000 recorded steps finish with the history inside its caps, evenly thinned, newest
  step kept. The default model (3 x 100 on digits) takes minutes for this on a shared 2-core machine,
  so the test uses a narrow network; ``benchmarks/`` measures the default model (history_mb_50k_steps).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import psutil
import pytest
import torch

from bnviz.config import Config
from bnviz.record import EVAL_CAP, LOSS_CAP, SNAPSHOT_CAP, History, Thinned
from bnviz.train import train

ROOT = Path(__file__).resolve().parents[1]
# A few code paths with randomness in them: dropout, the CNN, Adam, the reference BN with a
# cumulative average, per-sample norms.
CONFIGS = {
    "mlp-bn-dropout": Config(steps=150, width=32, depth=2, dropout=0.2, eval_every=50, record_every=10,
                             bn_diagnostics=True),
    "cnn-adam": Config(dataset="digits-image", arch="cnn", optimizer="adam", lr=0.003, steps=60, eval_every=30),
    "reference-cumulative-spirals": Config(dataset="spirals", norm="reference", momentum=None, activation="tanh",
                                           steps=150, width=16, n_samples=400, eval_every=50, bn_diagnostics=True),
    "groupnorm-sigmoid": Config(norm="groupnorm", activation="sigmoid", placement="after", steps=100, width=32),
}
MAX_HISTORY_BYTES = 20 * 1024 * 1024


def history_digest(h: History) -> str:
    """SHA-256 of every number a history holds, in a fixed order."""
    m = hashlib.sha256()

    def add(values) -> None:
        m.update(np.ascontiguousarray(np.asarray(values, dtype=np.float64)).tobytes())

    for arr in h.loss_curve():
        add(arr)
    for step, e in zip(h.evals.steps, h.evals.items):
        add([step, e.step, e.test_loss, e.test_acc, e.test_acc_batch_stats,
             e.test_acc_population])
        for i in sorted(e.population):
            add(e.population[i][0])
            add(e.population[i][1])
    for step, snap in zip(h.snapshots.steps, h.snapshots.items):
        add([step])
        for key in sorted(snap.taps):
            t = snap.taps[key]
            add(t.counts)
            add(t.percentiles)
            add(t.unit_percentiles)
            add([t.below, t.above, t.nonfinite, t.mean, t.std, t.zero_frac, t.n])
        for i in sorted(snap.norms):
            ns = snap.norms[i]
            for a in (ns.batch_mean, ns.batch_var, ns.running_mean, ns.running_var, ns.weight, ns.bias):
                add([] if a is None else a)
    add([-1 if h.diverged_at is None else h.diverged_at, -1 if h.stopped_at is None else h.stopped_at])
    return m.hexdigest()


def _digests_in_subprocess(threads: int, names: Sequence[str] = tuple(CONFIGS)) -> dict[str, str]:
    """{name: digest} of the CONFIGS ``names``, trained in a fresh interpreter with ``threads``."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        import torch
        torch.set_num_threads({threads})
        from test_determinism_long import CONFIGS, history_digest
        from bnviz.train import train
        print(json.dumps({{name: history_digest(train(CONFIGS[name]).history) for name in {list(names)!r}}}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def digests() -> dict[str, str]:
    assert torch.get_num_threads() == 1  # conftest, like bnviz.ui for the server
    return {name: history_digest(train(config).history) for name, config in CONFIGS.items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_config_same_history_in_process_whatever_the_global_rng_did(name, digests):
    torch.manual_seed(12345)          # another session of the server using torch's global RNG
    torch.rand(1000)
    np.random.seed(7)
    again = train(CONFIGS[name]).history
    assert again.finished
    assert history_digest(again) == digests[name]
    assert history_digest(train(CONFIGS[name].replace(seed=1)).history) != digests[name]


def test_same_config_same_history_in_another_process(digests):
    assert _digests_in_subprocess(threads=1) == digests


@pytest.mark.slow
def test_report_whether_two_threads_change_the_numbers(digests, record_property, capsys):
    """Not asserted: with two intra-op threads torch may sum in another order (last-bit differences).
    Measured: the BN MLP, the CNN and the GroupNorm MLP gave different histories with 2 threads, the
    reference BN on spirals the same one. The app, the export CLI, the benchmarks and this suite all
    use one thread, so their numbers agree with each other."""
    two = _digests_in_subprocess(threads=2, names=("mlp-bn-dropout", "groupnorm-sigmoid"))
    same = {name: two[name] == digests[name] for name in two}
    record_property("identical_with_2_threads", same)
    with capsys.disabled():
        print(f"\n[determinism] 1 thread vs 2 threads, identical histories: {same}")


# ----- long runs -------------------------------------------------------------------------------------
def test_thinned_series_stays_bounded_even_and_keeps_the_newest():
    series: Thinned[int] = Thinned(cap=200, stride=20)
    for step in range(50_000):
        if series.due(step) or step == 49_999:
            series.add(step, step)
        assert len(series) <= 200
    assert series.steps[-1] == series.items[-1] == 49_999
    body = series.steps[:-1]
    assert all(s % series.stride == 0 for s in body)
    assert np.all(np.diff(body) == series.stride) and body[0] == 0
    assert len(series) > 200 // 2


LONG = Config(dataset="moons", n_samples=200, depth=2, width=16, batch_size=16, steps=50_000)


@pytest.fixture(scope="module")
def long_run():
    process = psutil.Process()
    rss_before = process.memory_info().rss
    run = train(LONG)
    return run, process.memory_info().rss - rss_before


@pytest.mark.slow
def test_a_50k_step_run_finishes_with_its_history_within_the_caps(long_run):
    run, rss_growth = long_run
    h = run.history
    assert h.finished and len(h.losses) > 0
    assert h.nbytes() <= MAX_HISTORY_BYTES
    # an independent measure of what the history holds: its serialized size
    assert len(pickle.dumps(h)) <= MAX_HISTORY_BYTES
    assert rss_growth < 300 * 1024 * 1024
    assert len(h.snapshots) <= SNAPSHOT_CAP and len(h.losses) <= LOSS_CAP and len(h.evals) <= EVAL_CAP
    # the newest of each series is kept: the last forward pass, the last update, the final evaluation
    assert h.snapshots.steps[-1] == LONG.steps - 1
    assert h.losses.steps[-1] == LONG.steps - 1
    assert h.evals.steps[-1] == LONG.steps and h.evals[-1].step == LONG.steps
    # snapshots are taken when due, so their thinning keeps an even spacing from the start
    body = h.snapshots.steps[:-1]
    assert body[0] == 0 and np.all(np.diff(body) == h.snapshots.stride)
    assert len(h.snapshots) >= SNAPSHOT_CAP // 2


@pytest.mark.slow
def test_a_50k_step_run_keeps_loss_and_accuracy_curves_over_the_whole_run(long_run):
    h = long_run[0].history
    for series, cap in ((h.losses, LOSS_CAP), (h.evals, EVAL_CAP)):
        steps = np.asarray(series.steps)
        # at least a quarter of the cap in every fifth of the run
        counts, _ = np.histogram(steps, bins=5, range=(0, LONG.steps))
        assert counts.min() >= cap // 20, counts
