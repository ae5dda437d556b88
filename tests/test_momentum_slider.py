"""The BN momentum and placement sliders, and a momentum change that trains nothing.

Oracle for the derived numbers: the same page opened fresh with ``?momentum=m`` after the run
cache is emptied, so that it trains with that momentum (torch's BN updating its own buffers).
"""
import json

import numpy as np
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

from bnviz import ui
from conftest import ROOT
from test_page_histograms import trainings  # noqa: F401 - the fixture counting trainings

PAGE = str(ROOT / "pages" / "1_Activation_histograms.py")
QUICK = {"steps": "100", "depth": "2", "width": "32"}


def _app(**query: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=600)
    for key, value in {**QUICK, **query}.items():
        at.query_params[key] = value
    return at.run()


def _numbers(at: AppTest) -> list:
    """Every number of every chart as the browser gets it (plotly's JSON), chart by chart."""
    out = []
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out.append([pio.from_json(json.dumps(spec)).to_plotly_json()["data"]])
    return out


def _flatten(obj, acc):
    if isinstance(obj, dict):
        for k in sorted(obj):
            _flatten(obj[k], acc)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _flatten(v, acc)
    elif isinstance(obj, np.ndarray):
        acc.extend(np.asarray(obj, dtype=float).ravel().tolist() if obj.dtype.kind in "fiu" else obj.ravel().tolist())
    else:
        acc.append(obj)
    return acc


def test_the_sliders_are_sliders_with_their_stops():
    at = _app()
    assert not at.exception
    momentum = at.select_slider(key="histograms.momentum")
    assert "momentum" in momentum.label.lower()
    options = list(momentum.options)
    assert options[0].startswith("None") and "0.1 (Keras 0.9)" in options and options[-1].startswith("1 ")
    assert "0.001 (Keras 0.999)" in options
    placement = at.select_slider(key="histograms.placement")
    assert "placement" in placement.label.lower()
    assert list(placement.options) == ["no normalization", "before activation (Linear-BN-act)",
                                       "after activation (Linear-act-BN)"]


@pytest.mark.timeout(900)
def test_moving_momentum_trains_nothing_and_equals_a_page_opened_with_it(trainings):
    ui.run_store.clear()
    at = _app(seed="11")
    assert not at.exception and len(trainings) == 2          # with and without BN
    at.select_slider(key="histograms.momentum").set_value(0.01).run()
    assert not at.exception
    assert len(trainings) == 2, "a momentum change must not train again"
    assert at.query_params["momentum"] in ("0.01", ["0.01"])
    moved = _flatten(_numbers(at), [])

    ui.run_store.clear()                                      # the oracle trains with momentum 0.01
    fresh = _app(seed="11", momentum="0.01")
    assert not fresh.exception and len(trainings) == 4
    opened = _flatten(_numbers(fresh), [])
    assert len(moved) == len(opened)
    for a, b in zip(moved, opened):
        if isinstance(a, float) and isinstance(b, float):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
        else:
            assert a == b


@pytest.mark.timeout(600)
def test_placement_no_normalization_trains_one_network_without_any_norm(trainings):
    at = _app(placement="none")
    assert not at.exception
    assert len(trainings) == 1 and not trainings[0].has_norm


@pytest.mark.timeout(600)
def test_affine_beside_the_norm_settings_follows_the_link(trainings):
    at = _app(affine="false")
    assert not at.exception
    assert at.toggle(key="histograms.affine").value is False
    assert trainings and all(not c.affine for c in trainings)
