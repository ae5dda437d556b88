"""The gradient-accumulation page (AppTest): three figures, the metrics, bad input explained."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/16_Gradient_accumulation.py")
pytestmark = pytest.mark.timeout(600)


def page(**query) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.query_params.update({"steps": "100", "width": "32", "depth": "2", **query})
    return at


def test_draws_three_figures_and_the_bn_gap():
    at = page(micro_batches="4").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 3
    labels = [m.label for m in at.metric]
    assert "BN eval gap (accumulated − true batch)" in labels
    noise = next(m for m in at.metric if m.label.startswith("noise of BN's batch mean"))
    assert 1.3 < float(noise.value.rstrip("x")) < 2.8          # theory: sqrt(64/16) = 2
    assert at.query_params["micro_batches"] == "4"


def test_too_many_micro_batches_are_explained():
    at = page(batch_size="16", micro_batches="16").run()
    assert not at.exception
    assert any("fewer than 2 samples per micro-batch" in e.value for e in at.error)
    assert not at.get("plotly_chart")
    at = page(micro_batches="7").run()
    assert "micro_batches" in " ".join(w.value for w in at.warning)


def test_seeds_give_intervals_and_paired_verdicts():
    at = page(seeds="2", steps="100").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    text = " ".join(m.value for m in at.markdown)
    assert "Across 2 seeds" in text and "over 2 seeds" in text
    assert "BatchNorm, 8 x 8 accumulated" in text and "95 %" in text
    assert len(at.get("plotly_chart")) == 3
