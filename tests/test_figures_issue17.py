"""The issue-17 figures draw the numbers they are given: traces checked against the inputs and the
quantities derived from them (synchronized BN's global mean, lr / ||W||^2)."""
import numpy as np

from bnviz.experiments import data_parallel as dp
from bnviz.experiments.grad_accumulation import AccumulationRun, MeanNoise
from bnviz.experiments.small_batch import RemedyRun, RemedyStudy
from bnviz.experiments.weight_decay import NormRun
from bnviz.figures import data_parallel as dp_figs
from bnviz.figures import grad_accumulation as ga_figs
from bnviz.figures import small_batch as sb_figs
from bnviz.figures import weight_decay as wd_figs


def _record(seed: int, c: int = 4) -> dp.RankRecord:
    rng = np.random.default_rng(seed)
    return dp.RankRecord(steps=np.array([0, 5, 9]), batch_mean=rng.normal(size=(3, c)),
                         running_mean=rng.normal(size=(3, c)), test_acc=0.5 + seed / 100, diverged_at=None)


def _study() -> dp.Study:
    variants = dp.variants_for(4, (2, 4))
    records = [[_record(10 * rank + i) for i in range(len(variants))] for rank in range(2)]
    return dp.Study(config=dp.Config(), world_size=2, variants=variants, records=records, elapsed_s=1.0, pids=[1, 2])


def test_data_parallel_figures():
    study = _study()
    acc = dp_figs.accuracy_by_per_device(study)
    sync = next(t for t in acc.data if t.name == "synchronized BN")
    assert list(sync.x) == [2, 4] and list(sync.y) == [study.accuracy(dp.Variant("synchronized BN", b)) for b in (2, 4)]
    assert list(sync.customdata) == [4, 8]                       # global batch = 2 x b
    stats = dp_figs.batch_statistics(study, 4)
    sync_records = study.per_rank(dp.Variant("synchronized BN", 4))
    shared = next(t for t in stats.data if t.name.startswith("synchronized BN normalizes by"))
    np.testing.assert_allclose(shared.y, (sync_records[0].batch_mean[-1] + sync_records[1].batch_mean[-1]) / 2)
    running = dp_figs.running_statistics(study, 4, channel=2)
    unbroadcast = study.per_rank(dp.Variant("plain BN", 4, broadcast_buffers=False))
    drawn = [t for t in running.data if t.xaxis == "x2"]
    for rank, trace in enumerate(drawn):
        np.testing.assert_allclose(trace.y, unbroadcast[rank].running_mean[:, 2])
    assert not [t for t in dp_figs.running_statistics(study, 4, channel=9).data]   # no such channel


def test_weight_decay_figure_draws_lr_over_squared_norms():
    norms = np.array([[2.0, 4.0], [2.5, 3.0]])
    run = NormRun(weight_decay=0.0, lr=0.1, layers=["layer 1", "layer 2"], norms=norms, grad_norms=np.ones((1, 2)),
                  eval_steps=np.array([0, 1]), test_acc=np.array([0.1, 0.9]), diverged_at=None)
    fig = wd_figs.norms_and_effective_lr([run])
    right = [t for t in fig.data if t.xaxis == "x2"]
    np.testing.assert_allclose(right[1].y, 0.1 / norms[:, 1] ** 2)
    np.testing.assert_allclose([t for t in fig.data if t.xaxis == "x"][0].y, norms[:, 0])


def test_accumulation_and_remedy_figures_draw_their_runs():
    noise = MeanNoise(n=8, measured=np.array([0.1, 0.2]), theory=np.array([0.11, 0.19]))
    runs = [AccumulationRun(norm="batchnorm", mode=m, batch_size=64, micro_batches=k, eval_steps=np.array([0, 10]),
                            test_acc=np.array([0.1, acc]), losses=np.ones(10), noise=noise, diverged_at=None)
            for m, k, acc in (("true batch", 1, 0.9), ("accumulated", 8, 0.8))]
    bars = ga_figs.final_accuracy(runs)
    assert [list(t.y) for t in bars.data] == [[0.9], [0.8]]
    scatter = ga_figs.statistics_noise(runs)
    np.testing.assert_allclose(scatter.data[0].x, noise.theory)
    np.testing.assert_allclose(scatter.data[0].y, noise.measured)

    def run(kind, label, b, sampling, acc):
        return RemedyRun(remedy=kind, label=label, batch_size=b, sampling=sampling, eval_steps=np.array([0, 5]),
                         test_acc=np.array([0.1, acc]), losses=np.ones(5), diverged_at=None)
    study = RemedyStudy(sweep=[run("batchnorm", "BatchNorm", b, "iid", a) for b, a in ((2, 0.3), (8, 0.9))],
                        two_class=[run("batchnorm", "BatchNorm", 8, s, a) for s, a in (("iid", 0.9), ("two-class", 0.6))],
                        batch_sizes=(2, 8))
    sweep = sb_figs.sweep(study)
    assert list(sweep.data[0].x) == [2, 8] and list(sweep.data[0].y) == [0.3, 0.9]
    two = sb_figs.two_class(study)
    assert [list(t.y) for t in two.data if t.type == "bar"] == [[0.9], [0.6]]
