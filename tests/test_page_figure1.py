"""The Figure 1 page (AppTest): the preset trains, draws the three panels from the History, and explains MNIST."""
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from bnviz.record import IOFFE_PERCENTILES, PERCENTILES

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/9_Figure_1_reproduction.py")


def page(**query) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.query_params.update({"steps": "100", **query})
    return at


def test_preset_trains_and_draws_figure_1():
    at = page().run()
    assert not at.exception
    assert at.session_state["batch_size"] == 60 and at.session_state["steps"] == 100
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) == {"test accuracy, with BN", "test accuracy, without BN"}
    text = " ".join(m.value for m in at.markdown)
    assert "3 fully connected hidden layers of 100" in text and "1,797 images of 8x8" in text


def test_mnist_toggle_is_disabled_and_explains_where_the_files_go():
    at = page(mnist="1").run()
    assert not at.exception
    toggle = at.toggle(key="figure1.view.mnist")
    assert toggle.disabled and toggle.value is False
    assert any("MNIST files are not on this machine" in w.value for w in at.warning)
    info = " ".join(i.value for i in at.info)
    assert "toggle is disabled" in info and "BNVIZ_DATA_DIR" in info and "train-images-idx3-ubyte" in info


def test_bad_input_explains_itself():
    at = page(batch_size="1", lr="abc").run()
    assert not at.exception
    assert any("lr" in w.value for w in at.warning)
    assert any("batch of one" in e.value for e in at.error)
    assert not at.get("plotly_chart")


def test_figure_panels_are_the_history_and_the_percentiles_match_numpy():
    """(b, c) are the History's unit-0 percentiles of the last layer's sigmoid input; the last of them
    is recomputed with numpy from the network replayed to that step (bnviz.train reproduces train)."""
    import copy

    import torch

    from bnviz.train import train_steps
    from taps import block_taps
    from bnviz.train import train
    from bnviz.views import figure1

    config = figure1.DEFAULT.replace(steps=40, record_every=10, eval_every=20)
    runs = {label: train(cfg) for label, cfg in figure1.runs(config).items()}
    [fig] = figure1.make_figures(config, runs).values()
    layer = figure1.last_layer(config)
    idx = [PERCENTILES.index(q) for q in IOFFE_PERCENTILES]
    for label, axis in ((figure1.WITHOUT, "x2"), (figure1.WITH, "x3")):
        history = runs[label].history
        steps, stats = history.tap_series(layer, "pre_activation")
        expected = np.array([s.unit_percentiles[idx] for s in stats])
        drawn = {t.meta: np.asarray(t.y) for t in fig.data if t.xaxis == axis}  # meta: the percentile
        assert set(drawn) == set(IOFFE_PERCENTILES)
        for q, column in zip(IOFFE_PERCENTILES, expected.T):
            np.testing.assert_array_equal(drawn[q], column)
        steps_a, acc = history.eval_curve("test_acc")
        [acc_trace] = [t for t in fig.data if t.name == f"{label}: test accuracy"]
        np.testing.assert_array_equal(acc_trace.y, acc)

        seen = {}

        def grab(step, model, xb, yb, seen=seen):
            if step == config.steps - 1:
                seen["x"] = block_taps(copy.deepcopy(model), xb)[layer]["pre_activation"][:, 0].numpy()
        train_steps(runs[label].config, on_step=grab)
        assert steps[-1] == config.steps - 1
        np.testing.assert_allclose(stats[-1].unit_percentiles[idx], np.percentile(seen["x"], IOFFE_PERCENTILES),
                                   rtol=1e-5, atol=1e-6)


def test_with_local_mnist_files_the_toggle_trains_on_them(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savez(folder / "mnist.npz", x_train=rng.integers(0, 256, (300, 28, 28), dtype=np.uint8),
             y_train=np.arange(300) % 10, x_test=rng.integers(0, 256, (100, 28, 28), dtype=np.uint8),
             y_test=np.arange(100) % 10)
    monkeypatch.setenv("BNVIZ_DATA_DIR", str(tmp_path))
    at = page(mnist="1", steps="100").run()
    assert not at.exception
    toggle = at.toggle(key="figure1.view.mnist")
    assert not toggle.disabled and toggle.value is True
    assert not at.info
    assert any("This run: MNIST" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 1
