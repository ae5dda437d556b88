"""The "Your runs" figures against the run store's own arrays, torch and numpy.

Runs are recorded here with ``bnviz.watch`` on tiny models (BatchNorm1d and BatchNorm2d); every
trace drawn must hold the numbers :class:`bnviz.store.StoredRun` returns for the same layer and
step, and what the figure derives (the unbiased batch variance, the band across channels) must
match torch's and numpy's own computation.
"""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bnviz
from bnviz.doctor import diagnose
from bnviz.figures import runs as figs
from bnviz.views import runs as view


# ----- recording runs (also used by tests/test_page_runs.py and tests/test_browser_runs.py) ------------
def batches(n: int, batch: int, seed: int, shape: tuple[int, ...] = (6,), classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, *shape, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(n)]


def mlp(channels: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, channels), nn.BatchNorm1d(channels), nn.ReLU(), nn.Linear(channels, 3))


def convnet() -> nn.Module:
    """Two BatchNorm2d layers: 4 channels (a line per channel) and 24 (a band across channels)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 24, 3), nn.BatchNorm2d(24),
                         nn.ReLU(), nn.Flatten(), nn.Linear(24 * 4 * 4, 3))


def frozen_mlp() -> nn.Module:
    """The fault the doctor calls frozen_but_moving: gamma and beta frozen, BN left in train mode."""
    model = mlp()
    for p in model[1].parameters():
        p.requires_grad_(False)
    return model


def record(run_dir: Path, model: nn.Module, data, *, every: int = 5, holdout=None, lr: float = 0.1, **scalars):
    """Train ``model`` on ``data`` under bnviz.watch; ``scalars`` are logged every step as given."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    with bnviz.watch(model, run_dir, every=every, holdout=holdout) as w:
        for x, y in data:
            model.train()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.step(loss=loss.item(), **scalars)
    return bnviz.open_run(run_dir)


def values(data) -> np.ndarray:
    """A trace's array as plotly holds it (numpy, or base64 once serialized)."""
    if isinstance(data, dict) and "bdata" in data:
        flat = np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
        return flat.reshape([int(n) for n in str(data["shape"]).split(",")]) if "shape" in data else flat
    return np.asarray(data, dtype=np.float64)


def trace(fig, name: str, xaxis: str | None = None):
    found = [t for t in fig.data if t.name == name and (xaxis is None or t.xaxis == xaxis)]
    assert len(found) == 1, (name, [t.name for t in fig.data])
    return found[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        "mlp": record(root / "mlp", mlp(), batches(40, 32, 0), holdout=batches(1, 64, 9)[0], lr_logged=0.1),
        "conv": record(root / "conv", convnet(), batches(30, 16, 1, shape=(1, 8, 8))),
        "frozen": record(root / "frozen", frozen_mlp(), batches(40, 32, 2)),
    }, root


def test_batch_vs_running_draws_the_stored_statistics_of_the_layer_and_step(runs):
    stored, root = runs
    for name in ("mlp", "conv"):
        run = stored[name]
        data = view.read_run(root, name)
        for layer in run.norm_layers:
            index = data.layer_names.index(layer)
            steps, bmean, bvar = run.batch_stats(layer)
            _, rmean, rvar = run.running_stats(layer)
            count = run.layer_state(layer)["count"]
            i = len(steps) // 2
            fig = view.batch_vs_running(data, layer=index, step=int(steps[i]))
            assert f"at step {steps[i]}" in fig.layout.title.text
            np.testing.assert_array_equal(values(trace(fig, "batch mean").y), bmean[i])
            np.testing.assert_array_equal(values(trace(fig, "running mean").y), rmean[i])
            np.testing.assert_array_equal(values(trace(fig, "batch variance, biased (used to normalize)").y), bvar[i])
            np.testing.assert_array_equal(values(trace(fig, "running variance (unbiased, as torch stores it)").y),
                                          rvar[i])
            n = int(count[i])
            np.testing.assert_allclose(values(trace(fig, "batch variance, unbiased (x n/(n-1))").y),
                                       bvar[i] * n / (n - 1), rtol=1e-6)
            np.testing.assert_array_equal(values(trace(fig, "batch mean").x), np.arange(bmean.shape[1]))
            assert f"n = {n} values per channel" in fig.layout.title.subtitle.text


def test_the_unbiased_batch_variance_is_torchs(tmp_path):
    """With momentum=1 torch's running_var after a step is that batch's unbiased variance: the
    figure's unbiased batch variance must equal it, and torch.var on the batch itself."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3, momentum=1.0), nn.Flatten(), nn.Linear(3 * 5 * 5, 2))
    data = batches(6, 4, 3, shape=(3, 5, 5), classes=2)
    record(tmp_path / "run", model, data, every=1, lr=0.0)
    data_view = view.read_run(tmp_path, "run")
    for step in (0, 3, 5):
        fig = view.batch_vs_running(data_view, layer=0, step=step)
        x = data[step][0]
        torch_var = x.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True).numpy()
        unbiased = values(trace(fig, "batch variance, unbiased (x n/(n-1))").y)
        np.testing.assert_allclose(unbiased, torch_var, rtol=1e-4)
        np.testing.assert_allclose(values(trace(fig, "running variance (unbiased, as torch stores it)").y), torch_var,
                                   rtol=1e-4)
        np.testing.assert_allclose(values(trace(fig, "batch variance, biased (used to normalize)").y),
                                   torch_var * (4 * 25 - 1) / (4 * 25), rtol=1e-4)


def test_gamma_and_beta_one_line_per_channel_are_the_stored_parameters(runs):
    stored, root = runs
    run, data = stored["mlp"], view.read_run(root, "mlp")
    [layer] = run.norm_layers
    steps, weight, bias = run.params(layer)
    assert not np.allclose(weight[0], weight[-1])           # the parameters did train
    fig = view.gamma_beta(data, layer=data.layer_names.index(layer))
    assert "one line per channel" in fig.layout.title.text
    for ch in range(weight.shape[1]):
        gamma, beta = trace(fig, f"channel {ch}", "x"), trace(fig, f"channel {ch}", "x2")
        np.testing.assert_array_equal(values(gamma.x), steps)
        np.testing.assert_array_equal(values(gamma.y), weight[:, ch])
        np.testing.assert_array_equal(values(beta.y), bias[:, ch])


def test_gamma_and_beta_of_many_channels_are_numpys_percentiles_across_channels(runs):
    stored, root = runs
    run, data = stored["conv"], view.read_run(root, "conv")
    layer = run.norm_layers[1]
    steps, weight, bias = run.params(layer)
    assert weight.shape[1] == 24 > figs.MAX_CHANNEL_LINES
    fig = view.gamma_beta(data, layer=data.layer_names.index(layer))
    assert "median and 10th-90th percentile of 24 channels" in fig.layout.title.text
    for axis, params in (("x", weight), ("x2", bias)):
        lo, mid, hi = (np.percentile(params.astype(np.float64), q, axis=1) for q in (10, 50, 90))
        np.testing.assert_allclose(values(trace(fig, "10th-90th percentile across 24 channels", axis).y), lo)
        np.testing.assert_allclose(values(trace(fig, "median across channels", axis).y), mid)
        np.testing.assert_allclose(values(trace(fig, "90th percentile", axis).y), hi)
        np.testing.assert_array_equal(values(trace(fig, "median across channels", axis).x), steps)
    assert len(fig.data) == 6   # no per-channel lines


def test_the_doctors_evidence_figure_draws_the_findings_series(runs):
    stored, _ = runs
    [finding] = [f for f in diagnose(stored["frozen"]) if f.check == "frozen_but_moving"]
    assert finding.severity == "problem" and finding.series
    fig = figs.finding_evidence(finding)
    assert fig.layout.yaxis.title.text == finding.unit
    assert [t.name for t in fig.data] == list(finding.series)
    for t in fig.data:
        np.testing.assert_array_equal(values(t.x), finding.steps)
        np.testing.assert_array_equal(values(t.y), finding.series[t.name])


def test_scalar_curves_draw_every_logged_scalar_grouped_by_kind(runs):
    stored, root = runs
    run, data = stored["mlp"], view.read_run(root, "mlp")
    assert set(run.scalar_names) == {"loss", "lr_logged", "holdout_loss", "holdout_acc", "holdout_precise_loss",
                                     "holdout_precise_acc"}
    fig = view.scalar_curves(data)
    assert [a.text for a in fig.layout.annotations] == ["loss", "accuracy", "lr_logged"]
    by_name = {t.name.split(":")[0]: t for t in fig.data}
    assert set(by_name) == set(run.scalar_names)
    for name in run.scalar_names:
        steps, vals = run.scalars(name)
        np.testing.assert_array_equal(values(by_name[name].x), steps)
        np.testing.assert_array_equal(values(by_name[name].y), vals)
    # the held-out accuracies share the accuracy panel, the losses the loss panel
    assert by_name["holdout_acc"].xaxis == by_name["holdout_precise_acc"].xaxis == "x2"
    assert by_name["loss"].xaxis == by_name["holdout_loss"].xaxis == "x"
    assert by_name["lr_logged"].xaxis == "x3"
    assert fig.layout.yaxis2.tickformat == ".0%"


def test_layer_histograms_show_the_snapshot_of_the_step_and_at_most_eight_layers(runs):
    stored, root = runs
    data = view.read_run(root, "conv")
    step = data.steps[2]
    fig, shown, empty = view.layer_histograms(data, step=step, tap="norm_output", layer=1)
    assert (shown, empty) == (["1", "4"], [])
    assert [a.text for a in fig.layout.annotations] == ["1 (BatchNorm2d)", "4 (BatchNorm2d)"]
    snap = stored["conv"].history().snapshot_at(step)
    bar = [t for t in fig.data if t.xaxis == "x2"][0]
    st = snap.taps[(1, "norm_output")]
    filled = np.flatnonzero(st.counts)
    np.testing.assert_allclose(values(bar.y)[0::2], (st.counts / st.n)[filled[0]:filled[-1] + 1], rtol=1e-6)
    assert fig.layout.title.text == f"Normalization output per layer at step {step}"
    for n, chosen in ((5, 4), (20, 0), (20, 7), (20, 19), (13, 6)):
        picked = view.histogram_layers(n, chosen)
        assert chosen in picked and len(picked) == min(n, view.MAX_PANELS) and picked == sorted(set(picked))
        assert picked[0] in (0, chosen) and picked[-1] in (n - 1, chosen)


def test_a_layer_no_activation_follows_has_an_empty_panel_and_a_note(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.BatchNorm1d(8),
                          nn.Linear(8, 3))
    record(tmp_path / "run", model, batches(10, 16, 4))
    data = view.read_run(tmp_path, "run")
    fig, shown, empty = view.layer_histograms(data, step=data.steps[-1], tap="post_activation", layer=1)
    assert (shown, empty) == (["1", "4"], ["4"])
    assert {t.xaxis for t in fig.data} == {"x"}                  # bars in the first panel only
    assert view.tap_note(data, 1, "post_activation").startswith("Layer 4 has no post-activation")
    assert view.tap_note(data, 0, "post_activation") is None and view.tap_note(data, 1, "norm_output") is None
