"""The remedies experiment: swapped layers train as torch's BN where they must, two-class batches
are what they say."""
import numpy as np
import pytest
import torch
from torch import nn

from bnviz.config import Config
from bnviz.data import load
from bnviz.experiments import small_batch as sb
from bnviz.small_batch_norms import BatchRenorm, GhostBatchNorm, WSLinear
from bnviz.train import build_for, make_optimizer, run_loop

pytestmark = pytest.mark.timeout(300)
CONFIG = Config(steps=40, width=32, depth=2, batch_size=8, eval_every=20)


def _losses(model, config: Config, data) -> list[float]:
    _, _, stream = build_for(config, data)
    seen = []

    class Keep:
        def before_step(self, *a): pass
        def after_forward(self, step, logits, loss, y): seen.append(loss)
        def after_step(self, *a): return None
    run_loop(model, make_optimizer(config, model), stream, config.steps, [Keep()])
    return seen


@pytest.mark.parametrize("remedy", [sb.Remedy("renorm", r_max=1.0, d_max=0.0), sb.Remedy("ghost", ghost_size=8)])
def test_remedies_that_reduce_to_bn_train_as_torch_batchnorm(remedy):
    """Batch Renorm with r_max = 1, d_max = 0 and Ghost BN with one ghost batch per batch train
    step for step as the config's network with torch.nn.BatchNorm1d (same weights, same batches)."""
    data = load(CONFIG)
    model = sb.build_remedy(CONFIG, remedy, data)
    assert all(isinstance(b.norm, (BatchRenorm, GhostBatchNorm)) for b in model.blocks)
    reference, _, _ = build_for(CONFIG, data)
    assert all(isinstance(b.norm, nn.BatchNorm1d) for b in reference.blocks)
    np.testing.assert_allclose(_losses(model, CONFIG, data), _losses(reference, CONFIG, data), rtol=1e-4)
    for a, b in zip(model.blocks, reference.blocks):
        torch.testing.assert_close(a.norm.running_mean, b.norm.running_mean, rtol=1e-4, atol=1e-5)


def test_gn_ws_standardizes_every_hidden_weight_and_keeps_the_initial_weights():
    data = load(CONFIG)
    model = sb.build_remedy(CONFIG, sb.Remedy("gn_ws"), data)
    plain, _, _ = build_for(CONFIG.replace(norm="groupnorm"), data)
    for block, ref in zip(model.blocks, plain.blocks):
        assert isinstance(block.weight, WSLinear) and isinstance(block.norm, nn.GroupNorm)
        torch.testing.assert_close(block.weight.weight, ref.weight.weight)
    assert type(model.head[-1]) is nn.Linear


def test_two_class_batches():
    data = load(CONFIG)
    stream = sb.two_class_batches(data.x_train, data.y_train, 9, torch.Generator().manual_seed(0))
    pairs = set()
    for _ in range(50):
        x, y = next(stream)
        classes, counts = torch.unique(y, return_counts=True)
        assert len(x) == 9 and len(classes) == 2 and sorted(counts.tolist()) == [4, 5]
        pairs.add(tuple(classes.tolist()))
    assert len(pairs) > 10                                   # the pair changes from batch to batch


def test_study_shape_and_two_class_bn_loses_more_than_gn_ws():
    config = CONFIG.replace(steps=150, width=64, depth=3, eval_every=50)
    remedies = [sb.Remedy("batchnorm"), sb.Remedy("gn_ws")]
    result = sb.study(config, remedies, (4, 8))
    assert [(r.remedy, r.batch_size) for r in result.sweep] == [("batchnorm", 4), ("batchnorm", 8), ("gn_ws", 4),
                                                                ("gn_ws", 8)]
    assert [(r.remedy, r.sampling) for r in result.two_class] == [(k, s) for k in ("batchnorm", "gn_ws")
                                                                  for s in sb.SAMPLINGS]
    drop = {r.remedy: 0.0 for r in result.two_class}
    for r in result.two_class:
        drop[r.remedy] += r.final_acc if r.sampling == "iid" else -r.final_acc
    assert drop["batchnorm"] > drop["gn_ws"] + 0.03


def test_batch_renorm_factors_stay_within_the_schedule():
    """Recorded r and d: exactly 1 and 0 during the warm-up, within [1/r_max, r_max] and
    [-d_max, d_max] after, and clipped at the limits at some step (two-class batches are far from
    the running statistics)."""
    config = CONFIG.replace(steps=90)
    run = sb.train_remedy(config, sb.Remedy("renorm", r_max=2.0, d_max=1.0), "two-class")
    r, d, limits = run.renorm_r, run.renorm_d, run.renorm_limits
    assert r.shape == d.shape == (90, 32) and limits.shape == (90, 2)
    warm = config.steps // 6
    assert np.all(r[:warm] == 1) and np.all(d[:warm] == 0)
    np.testing.assert_allclose(limits[-1], [2.0, 1.0])
    assert np.all(r <= limits[:, :1] + 1e-6) and np.all(r >= 1 / limits[:, :1] - 1e-6)
    assert np.all(np.abs(d) <= limits[:, 1:] + 1e-6)
    assert np.any(np.isclose(np.abs(d[-10:]), 1.0))
