"""The Residual-networks page (AppTest): its three figures, its controls, bad input."""
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/11_Residual_networks.py")


def page(**query) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.query_params.update({"steps": "100", "blocks": "4", **query})
    return at


@pytest.mark.timeout(600)
def test_figures_metrics_and_controls():
    at = page().run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 3
    labels = [m.label for m in at.metric]
    assert "test accuracy, pre-activation BN" in labels and "test accuracy, Fixup (no norm)" in labels
    at.toggle(key="residual.view.zero_gamma").set_value(True).run()
    assert not at.exception
    assert at.query_params["zero_gamma"] == "True"
    assert "test accuracy, pre-activation BN, last γ = 0" in [m.label for m in at.metric]
    at.select_slider(key="residual.view.step").set_value(0).run()
    assert not at.exception and len(at.get("plotly_chart")) == 3


@pytest.mark.timeout(600)
def test_bad_input_is_explained():
    at = page(blocks="abc", batch_size="1").run()
    assert not at.exception
    assert any("blocks" in w.value for w in at.warning)
    assert any("batch of one" in e.value for e in at.error)
    assert not at.get("plotly_chart")


@pytest.mark.timeout(600)
def test_cnn_on_flat_data_says_which_images_it_uses():
    at = page(arch="cnn", dataset="moons", blocks="2").run()
    assert not at.exception and not at.error
    assert any("digits-image" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 3


@pytest.mark.timeout(900)
def test_seeds_give_intervals_and_paired_verdicts():
    at = page(seeds="2", blocks="2").run()
    assert not at.exception and not at.error
    pre = next(m for m in at.metric if m.label == "test accuracy, pre-activation BN")
    # mean ± half-width, or the interval's ends when it reaches past 0 or 100 % (tests/test_seeds.py)
    assert re.fullmatch(r"[\d.]+ % (± [\d.]+|\(95 % CI [\d.]+ to [\d.]+\))", pre.value), pre.value
    text = " ".join(md.value for md in at.markdown)
    assert "over 2 seeds" in text


@pytest.mark.timeout(900)
def test_seeds_beyond_the_work_budget_are_cut_with_a_note():
    from bnviz.views import residual
    assert residual.seeds_within_budget(residual.DEFAULT, 8, False, 20) == 8         # 5 x 8 blocks x 300 steps
    assert residual.seeds_within_budget(residual.DEFAULT.replace(arch="cnn"), 8, False, 3) == 1
    at = page(seeds="20", blocks="16", steps="200", width="256").run()
    assert not at.exception and not at.error
    assert any("would take too long here: training 1 seed(s)" in w.value for w in at.warning)
    assert "±" not in next(m for m in at.metric if m.label == "test accuracy, pre-activation BN").value
