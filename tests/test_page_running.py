"""The running-statistics page: its view functions against independent oracles, then the page in AppTest."""
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from bnviz import export, theory
from bnviz.experiments import streams
from bnviz.config import Config
from bnviz.train import train
from bnviz.views import registry, running

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/2_Running_statistics.py")
# Small networks for the AppTests that train (the default page trains 3 x 500 steps).
SMALL = {"steps": "100", "depth": "2", "width": "32"}


# ----- view functions ----------------------------------------------------------------------------
def test_momentum_labels_follow_the_chosen_convention():
    assert running.momentum_label(0.01) == "PyTorch 0.01"
    assert running.momentum_label(0.01, "keras") == "Keras 0.99"
    assert running.momentum_label(0.1, "keras") == f"Keras {theory.torch_to_keras_momentum(0.1):g}" == "Keras 0.9"
    assert "None" in running.momentum_label(None, "keras")
    assert running.momentum_choice(0.01) == "PyTorch 0.01 = Keras 0.99"


def test_momenta_round_trip_through_the_url_and_bad_items_are_explained():
    values = [0.01, 0.1, None]
    assert running.parse_momenta(running.format_momenta(values)) == (values, [])
    parsed, notes = running.parse_momenta("0, abc, 2, 0.02, 0.02, inf, cumulative")
    assert parsed == [0.02, None]
    joined = " ".join(notes)
    assert "never updates" in joined and "'abc' is not a number" in joined and "outside [0, 1]" in joined
    assert len(notes) == 4


def test_stream_values_from_a_link_snap_to_the_offered_ones():
    assert running.coerce_stream_value("mu", "1.0") == (1.0, None)
    value, note = running.coerce_stream_value("batch_size", "3")
    assert value in (2, 4) and "nearest" in note
    assert running.coerce_stream_value("sigma", "abc")[0] == streams.StreamSpec().sigma
    assert running.coerce_stream_value("seed", "-4") == (0, "seed: -4 is not a whole number in [0, 9999]; using 0")
    assert running.coerce_stream_value("drift", "wobble")[0] == "none"


def test_runs_train_each_momentum_with_a_shared_cadence():
    cfgs = running.runs(running.DEFAULT)
    assert [c.momentum for c in cfgs.values()] == [0.01, 0.1, 0.5]
    assert all(c.record_every == c.eval_every == 20 and c.steps == 500 for c in cfgs.values())
    assert list(running.runs(running.DEFAULT.replace(momentum=None), extra=(0.5, 0.5))) == [
        "PyTorch 0.5", "cumulative (None)"]
    assert "running" in registry()


def test_running_vs_population_lags_as_the_ema_predicts():
    """With the weights frozen (lr 1e-5) the population statistics are constant, so the running
    mean after the forward pass of step s has the expectation pop * (1 - (1 - m)^(s + 1)) and the
    running variance pop + (1 - pop) (1 - m)^(s + 1) (batches are samples without replacement of
    the training set, whose mean and unbiased variance are the population statistics)."""
    base = Config(dataset="digits", standardize=False, depth=1, width=128, lr=1e-5, steps=100,
                  momentum=0.05, batch_size=128)
    [cfg] = running.runs(base, extra=()).values()
    cmp = running.running_vs_population(train(cfg), 0)
    assert list(cmp.steps) == list(range(0, 100, 4))
    pm, pv = cmp.population_mean[0], cmp.population_var[0]
    np.testing.assert_allclose(cmp.population_mean, np.broadcast_to(pm, cmp.population_mean.shape), atol=1e-3)
    for p, s in enumerate(cmp.steps):
        remaining = 0.95 ** (s + 1)
        mean_fraction = (cmp.running_mean[p] * np.sign(pm)).sum() / np.abs(pm).sum()
        var_fraction = ((cmp.running_var[p] - 1) * np.sign(pv - 1)).sum() / np.abs(pv - 1).sum()
        assert mean_fraction == pytest.approx(1 - remaining, abs=0.006), s
        assert var_fraction == pytest.approx(1 - remaining, abs=0.002), s
    expected_error = np.mean(np.abs(cmp.running_mean - cmp.population_mean)
                             / np.sqrt(cmp.population_var + 1e-5), axis=1)
    np.testing.assert_allclose(cmp.mean_error(), expected_error)


def test_network_figures_draw_the_recorded_numbers():
    base = Config(dataset="moons", depth=2, width=16, steps=60)
    trained = {label: train(cfg) for label, cfg in running.runs(base, extra=(0.01,)).items()}
    figs = running.network_figures(trained, 1, None, "keras")
    assert set(figs) == {"running vs population error", "running vs population per channel",
                         "eval accuracy by statistics"}
    run = trained["PyTorch 0.01"]
    cmp = running.running_vs_population(run, 1)
    err = [t for t in figs["running vs population error"].data if t.name == "Keras 0.99" and t.xaxis == "x"][0]
    np.testing.assert_allclose(err.y, cmp.mean_error())
    acc = figs["eval accuracy by statistics"]
    steps, pop = run.history.eval_curve("test_acc_population")
    [trace] = [t for t in acc.data if t.xaxis == "x" and t.name.startswith("population")]
    assert acc.layout.annotations[0].text == "Keras 0.99"
    np.testing.assert_allclose(trace.y, pop)
    step = running.default_step(running.paired_steps([cmp]), base.steps)
    assert f"at step {step}" in figs["running vs population per channel"].layout.title.text


def test_make_figures_returns_every_figure_of_the_page():
    base = Config(dataset="moons", depth=2, width=16, steps=40)
    trained = {label: train(cfg) for label, cfg in running.runs(base, extra=()).items()}
    figs = running.VIEW.figures(base, trained)
    assert len(figs) == 5 and "stream running mean" in figs
    with zipfile.ZipFile(io.BytesIO(export.figures_zip(figs, images=()))) as zf:
        assert sum(name.endswith(".csv") for name in zf.namelist()) == 5


# ----- the page (AppTest) ------------------------------------------------------------------------
def _app(**params) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params.update(params)
    return at.run()


def _specs(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _names(spec: dict) -> set[str]:
    return {t.get("name") for t in spec["data"]}


def _ok(at) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_default_page_trains_three_momenta_and_shows_the_lag():
    at = _app()
    _ok(at)
    specs = _specs(at)
    assert len(specs) == 5
    assert {"PyTorch 0.01", "PyTorch 0.1", "PyTorch 0.5", "cumulative (None)", "true mean"} <= _names(specs[0])
    gaps = {m.label: m.value for m in at.metric}
    # The headline of the page: momentum 0.01 lags and costs eval accuracy somewhere in training.
    assert float(gaps["largest gap, PyTorch 0.01"].rstrip("%")) > 10
    assert at.query_params["stream_momenta"] == "0.01,0.1,0.5,none"
    assert at.query_params["momenta"] == "0.01,0.5" and at.query_params["dataset"] == "spirals"
    text = " ".join(m.value for m in at.markdown)
    assert "Keras 0.99 = PyTorch 0.01" in text


def test_stream_controls_redraw_and_bad_stream_input_is_explained():
    at = _app(**SMALL)
    _ok(at)
    at.multiselect(key="running.stream_momenta").set_value([0.9, None]).run()
    _ok(at)
    assert {"PyTorch 0.9", "cumulative (None)"} <= _names(_specs(at)[0])
    assert "PyTorch 0.01" not in _names(_specs(at)[0])
    assert at.query_params["stream_momenta"] == "0.9,none"

    at.radio(key="running.view.convention").set_value("keras").run()
    _ok(at)
    assert "Keras 0.1" in _names(_specs(at)[0]) and at.query_params["stream_momenta"] == "0.9,none"
    assert any(t.get("name") == "Keras 0.99" for t in _specs(at)[2]["data"])  # network runs relabelled too

    at.radio(key="running.view.variance").set_value("biased").run()
    _ok(at)
    assert "(n-1)/n x true variance" in _names(_specs(at)[1])
    assert any(m.value == "0.9375" for m in at.metric)  # (16 - 1) / 16

    for key, value in (("stream_batches", 100), ("stream_mu", -2.0), ("stream_sigma", 0.5), ("stream_drift", "linear"),
                       ("stream_shift", 5.0), ("stream_factor", 2.0)):
        widget = at.get("radio" if key == "stream_drift" else "selectbox" if key == "stream_batches"
                        else "select_slider")
        [w] = [w for w in widget if w.key == f"running.view.{key}"]
        w.set_value(value).run()
        _ok(at)
    at.number_input(key="running.view.stream_seed").set_value(7).run()
    _ok(at)
    assert "n = 16" in _specs(at)[0]["layout"]["title"]["text"]
    assert at.query_params["stream_drift"] == "linear" and at.query_params["stream_seed"] == "7"

    at.selectbox(key="running.view.stream_n").set_value(1).run()
    assert not at.exception
    assert any("n - 1 = 0" in e.value for e in at.error)
    at.selectbox(key="running.view.stream_n").set_value(2)
    at.multiselect(key="running.stream_momenta").set_value([]).run()
    assert any("at least one momentum" in w.value for w in at.warning)


def test_network_controls_retrain_and_redraw():
    at = _app(**SMALL)
    _ok(at)
    layer = at.selectbox(key="running.view.layer")
    assert layer.value == 1 and len(layer.options) == 2
    layer.set_value(0).run()
    _ok(at)
    assert "layer 1:" in _specs(at)[2]["layout"]["title"]["text"]
    step = at.select_slider(key="running.view.step")
    step.set_value(int(step.options[-1])).run()
    _ok(at)
    assert f"at step {at.query_params['step']}" in _specs(at)[3]["layout"]["title"]["text"]
    at.multiselect(key="running.momenta").set_value([0.9]).run()
    _ok(at)
    assert {"PyTorch 0.1", "PyTorch 0.9"} == {t["name"] for t in _specs(at)[2]["data"] if t.get("showlegend")}
    # AppTest's set_value(None) means "leave as is"; a browser picks the None stop like any other
    at.session_state["running.momentum"] = None
    at.run()
    _ok(at)
    assert [a["text"] for a in _specs(at)[4]["layout"]["annotations"]] == ["PyTorch 0.9", "cumulative (None)"]
    at.multiselect(key="running.momenta").set_value([0.001, 0.01, 0.03, 0.1, 0.3]).run()
    assert not at.exception and any("At most 5 momenta" in w.value for w in at.warning)
    at.selectbox(key="batch_size").set_value(1).run()
    assert not at.exception
    assert any("batch of one" in e.value for e in at.error)


def test_bad_link_values_are_adjusted_with_a_visible_note():
    at = _app(**SMALL, stream_momenta="0,abc,0.02,0.1", stream_mu="xyz", stream_n="3", stream_seed="99999",
              momenta="7,0.5")
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "never updates" in warnings and "'abc' is not a number" in warnings and "outside [0, 1]" in warnings
    assert "mu: 'xyz' is not a number" in warnings and "nearest" in warnings
    assert at.multiselect(key="running.stream_momenta").value == [0.02, 0.1]
    assert at.multiselect(key="running.momenta").value == [0.5]
    assert at.number_input(key="running.view.stream_seed").value == 9999
    assert "PyTorch 0.02" in _names(_specs(at)[0])
