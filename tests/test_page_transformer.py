"""The Transformers page (AppTest): four figures, controls, bad input."""
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/13_Transformers.py")


def page(**query) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.query_params.update({"steps": "100", "layers": "2", **query})
    return at


@pytest.mark.timeout(900)
def test_figures_metrics_and_controls():
    at = page().run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 4
    labels = [m.label for m in at.metric]
    assert "test accuracy, Post-LN, warm-up" in labels and "last / first layer, Pre-LN" in labels
    at.select_slider(key="transformer.view.shift").set_value(10.0).run()
    assert not at.exception and at.query_params["shift"] == "10.0"
    at.selectbox(key="transformer.view.norm_layer").set_value("blocks.1.norm2").run()
    at.selectbox(key="transformer.view.source").set_value("Post-LN, no warm-up").run()
    assert not at.exception and len(at.get("plotly_chart")) == 4
    assert at.query_params["source"] == "Post-LN, no warm-up"


@pytest.mark.timeout(900)
def test_bad_input_is_explained():
    at = page(layers="abc", warmup="7", source="nonsense", scale="x").run()
    assert not at.exception and not at.error
    warning = " ".join(w.value for w in at.warning)
    assert "layers" in warning and "warmup" in warning
    assert at.session_state["transformer.view.warmup"] == 10
    assert at.session_state["transformer.view.source"] in ("Post-LN, no warm-up", "Pre-LN, no warm-up",
                                                            "Post-LN, warm-up", "Pre-LN, warm-up")
    assert len(at.get("plotly_chart")) == 4


@pytest.mark.timeout(1200)
def test_seeds_give_intervals_and_paired_verdicts():
    at = page(seeds="2", layers="1").run()
    assert not at.exception and not at.error
    post = next(m for m in at.metric if m.label == "test accuracy, Post-LN, warm-up")
    # mean ± half-width, or the interval's ends when it reaches past 0 or 100 % (tests/test_seeds.py)
    assert re.fullmatch(r"[\d.]+ % (± [\d.]+|\(95 % CI [\d.]+ to [\d.]+\))", post.value), post.value
    assert "over 2 seeds" in " ".join(md.value for md in at.markdown)


@pytest.mark.timeout(900)
def test_no_data_set_control_the_task_is_generated():
    at = page(dataset="mnist").run()
    assert not at.exception and not at.error
    assert not [s for s in at.selectbox if s.key == "dataset"]
    assert any("dataset has no control on this page" in w.value for w in at.warning)


def test_seeds_within_the_work_budget():
    from bnviz.views import transformer
    config = transformer.DEFAULT
    assert transformer.seeds_within_budget(config, 3, False, 5) == 5          # 4 networks x 3 blocks x 300 steps
    assert transformer.seeds_within_budget(config, 6, True, 20) == 1         # 10 networks x 6 blocks
