"""The data-parallel experiment in 2 real processes: synchronized BN trains as one BN on the global
batch; the processes' running statistics agree or drift as DDP's buffer broadcast says."""
import numpy as np
import pytest
import torch

from bnviz.config import Config
from bnviz.data import batches, load
from bnviz.experiments import data_parallel as dp
from bnviz.recorder import Recorder
from bnviz.train import build_for, make_optimizer, run_loop

pytestmark = pytest.mark.timeout(600)
CONFIG = Config(steps=30, width=16, depth=2, batch_size=4, record_every=5)


def test_shards_put_together_are_the_global_batches():
    data = load(CONFIG)
    shards = [dp.sharded_batches(data, 4, 3, rank, torch.Generator().manual_seed(5)) for rank in range(3)]
    whole = batches(data.x_train, data.y_train, 12, torch.Generator().manual_seed(5))
    for _ in range(5):
        x, y = next(whole)
        parts = [next(s) for s in shards]
        torch.testing.assert_close(torch.cat([p[0] for p in parts]), x)
        torch.testing.assert_close(torch.cat([p[1] for p in parts]), y)


def _single_process_means(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """torch's BatchNorm1d trained in one process on the global batches: the first layer's batch
    mean and running mean at the steps the job records."""
    data = load(config)
    model, optimizer, stream = build_for(config, data)
    recorder = Recorder(model, model.recorded_layers()[:1])
    taken = []

    class Take:
        def before_step(self, step, m, x, y):
            if step % config.record_every == 0 or step == config.steps - 1:
                recorder.arm()
        def after_forward(self, step, logits, loss, y):
            if recorder.armed:
                norm = recorder.collect(step).norms[0]
                taken.append((norm.batch_mean, norm.running_mean))
        def after_step(self, *a): return None
    run_loop(model, optimizer, stream, config.steps, [Take()])
    return tuple(np.asarray(t) for t in zip(*taken))


def test_job_records_and_sync_bn_equals_bn_on_the_global_batch():
    study = dp.run(CONFIG, 2, sizes=(4,), timeout_s=300)
    assert [v.label for v in study.variants] == ["plain BN, 4 per device", "synchronized BN, 4 per device",
                                                 "plain BN, 4 per device, broadcast_buffers=False"]
    plain, sync, unbroadcast = (study.per_rank(v) for v in study.variants)
    steps = list(range(0, 30, 5)) + [29]
    for records in (plain, sync, unbroadcast):
        assert [r.steps.tolist() for r in records] == [steps, steps]
    # synchronized: the same running statistics in both processes, those of one BN on the global batch of 8
    np.testing.assert_array_equal(sync[0].running_mean, sync[1].running_mean)
    batch_mean, running_mean = _single_process_means(CONFIG.replace(batch_size=8))
    np.testing.assert_allclose(sync[0].running_mean, running_mean, rtol=1e-3, atol=1e-4)
    # each recorder sees its own 4 samples; their average is the global mean BN normalized by
    np.testing.assert_allclose((sync[0].batch_mean + sync[1].batch_mean) / 2, batch_mean, rtol=1e-3, atol=1e-4)
    assert not np.allclose(sync[0].batch_mean, sync[1].batch_mean)
    # plain: each process its own batch; without broadcast the running statistics drift further apart
    assert not np.allclose(plain[0].batch_mean, plain[1].batch_mean)
    gap = lambda r: np.abs(r[0].running_mean[-1] - r[1].running_mean[-1]).mean()
    assert gap(unbroadcast) > gap(plain) > 0
    assert len(study.pids) == 2


def test_bad_settings_are_refused_before_any_process_starts():
    with pytest.raises(ValueError, match="Between 1 and 4 processes"):
        dp.run(CONFIG, 5)
    assert dp.problems(CONFIG.replace(batch_size=1), 2)
