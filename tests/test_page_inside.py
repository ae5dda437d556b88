"""The Inside-BN page (AppTest): the tiny batch's numbers, the CNN's channels, whitening, bad links."""
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from bnviz.experiments import bn_steps
from bnviz.views import inside

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/7_Inside_BN.py")


def page(**query) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.query_params.update({"steps": "100", **query})
    return at


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def test_default_page_shows_every_part_with_torch_agreeing():
    at = page().run()
    assert not at.exception
    assert charts(at) == 8
    metrics = {m.label: float(m.value) for m in at.metric}
    assert metrics["largest |difference|"] < 1e-5
    assert metrics["largest |float32 - float64|"] < 1e-5


def test_controls_redraw_the_numbers():
    at = page().run()
    at.select_slider(key="inside.view.gamma").set_value(2.0).run()
    at.select_slider(key="inside.view.beta").set_value(-1.0).run()
    assert not at.exception
    steps = inside.tiny_batch(inside.Settings(gamma=2.0, beta=-1.0))
    shown = at.table[3].value.to_numpy().astype(float)  # the y table (shown to 4 decimals)
    np.testing.assert_allclose(shown, steps.y, atol=5e-5)
    ref = torch.nn.BatchNorm1d(3).train()
    with torch.no_grad():
        ref.weight.fill_(2.0)
        ref.bias.fill_(-1.0)
        expected = ref(torch.tensor(steps.x, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(shown, expected, atol=1e-5)
    at.radio(key="inside.view.channel").set_value(5).run()
    at.select_slider(key="inside.view.correlation").set_value(-0.9).run()
    assert not at.exception and charts(at) == 8
    assert at.query_params["correlation"] == "-0.9" and at.query_params["channel"] == "5"


def test_bad_link_values_are_explained_not_raised():
    at = page(gamma="abc", correlation="5", channel="99", batch_seed="-3").run()
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "gamma" in warning and "correlation" in warning and "channel" in warning and "batch_seed" in warning
    assert at.session_state["inside.view.correlation"] == 0.99
    assert at.session_state["inside.view.channel"] == 7
    assert charts(at) == 8


def test_cnn_needs_images_but_the_rest_of_the_page_stays():
    at = page(dataset="moons").run()
    assert not at.exception
    assert any("needs images" in e.value for e in at.error)
    assert charts(at) == 5  # Algorithm 1, whitening (2), cost, eigh gradient


def test_missing_mnist_files_stop_only_the_cnn_part():
    at = page(dataset="mnist").run()
    assert not at.exception
    assert any("MNIST data not found" in e.value for e in at.error)
    assert charts(at) == 5


def test_per_channel_statistics_match_numpy_over_axes_0_2_3():
    from bnviz.train import train
    run = train(inside.DEFAULT.replace(steps=20))
    channels = inside.channel_view(run)
    images = run.dataset.x_test[:run.config.batch_size]
    conv = run.model.blocks[0].weight
    with torch.no_grad():
        maps = conv(images).numpy().astype(np.float64)
    np.testing.assert_allclose(channels.conv, maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(channels.batch_mean, maps.mean(axis=(0, 2, 3)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(channels.batch_var, maps.var(axis=(0, 2, 3)), rtol=1e-5)
    bn2d = torch.nn.BatchNorm2d(maps.shape[1]).train()
    with torch.no_grad():
        bn2d.weight.copy_(run.model.blocks[0].norm.weight)
        bn2d.bias.copy_(run.model.blocks[0].norm.bias)
        expected = bn2d(torch.tensor(maps, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(channels.bn, expected, atol=1e-5)
    np.testing.assert_array_equal(channels.running_mean, run.model.blocks[0].norm.running_mean.numpy())


def test_batch_steps_match_torch_and_the_reference():
    for seed in range(5):
        steps = bn_steps.batch_steps(bn_steps.example_batch(seed), gamma=[0.5, 1.0, 2.0], beta=[1.0, 0.0, -1.0])
        layer = torch.nn.BatchNorm1d(3).train()
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
            layer.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
            out = layer(torch.tensor(steps.x, dtype=torch.float32)).numpy()
        np.testing.assert_allclose(steps.y, out, atol=1e-5)
        np.testing.assert_allclose(steps.mean, torch.tensor(steps.x).mean(0).numpy())
        np.testing.assert_allclose(steps.var, torch.tensor(steps.x).var(0, correction=0).numpy())
        cmp = bn_steps.compare_implementations(steps)
        np.testing.assert_array_equal(cmp.torch, out)
        assert cmp.max_abs_diff == np.max(np.abs(cmp.reference - out)) < 1e-5



@pytest.mark.parametrize("key, kind, value, redrawn", [
    ("inside.view.gamma", "select_slider", 2.0, ["tiny_batch"]),
    ("inside.view.batch_seed", "number_input", 7, ["tiny_batch", "whitened"]),
    ("inside.view.correlation", "select_slider", -0.9, ["whitened"]),
    ("inside.view.channel", "radio", 5, ["conv_figures"]),
])
def test_a_display_change_redraws_only_the_section_drawn_with_it(monkeypatch, key, kind, value, redrawn):
    """Each section's controls and what depends on them are a part of the page (ui.Page.part): a
    display change reruns those parts, not the page script (which would call page.config)."""
    from bnviz import ui

    at = page().run()
    calls: list[str] = []
    for name in ("tiny_batch", "whitened", "conv_figures"):
        real = getattr(inside, name)
        monkeypatch.setattr(inside, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    real_config = ui.Page.config
    monkeypatch.setattr(ui.Page, "config", lambda self, *a, **k: calls.append("page script") or real_config(self, *a, **k))
    n = charts(at)
    getattr(at, kind)(key=key).set_value(value).run()
    assert not at.exception and not at.error
    assert list(dict.fromkeys(calls)) == redrawn  # (the batch figure computes the batch again)
    assert charts(at) == n
    assert at.query_params[key.rsplit(".", 1)[1]] == str(value)
