"""The BN-across-devices page (AppTest): a real 2-process job, its figures, and bad input explained."""
from pathlib import Path

import psutil
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/17_BN_across_devices.py")
pytestmark = pytest.mark.timeout(900)


def page(**query) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=600)
    at.query_params.update({"steps": "100", "width": "32", "depth": "2", **query})
    return at


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_two_processes_train_and_every_figure_is_drawn():
    at = page().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 3
    assert {"plain BN, 4 per device", "synchronized BN, 4 per device"} <= {m.label for m in at.metric}
    from bnviz import ui
    from bnviz.views import data_parallel as view
    config = view.DEFAULT.replace(steps=100, width=32, depth=2)
    study = ui.result_store().get((view.study.__module__, view.study.__qualname__, (config, 2)))
    assert len(study.pids) == 2 and not any(_alive(p) for p in study.pids)   # the job's processes are gone
    at.select_slider(key="data_parallel.view.channel").set_value(3).run()
    assert not at.exception and len(at.get("plotly_chart")) == 3
    assert at.query_params["channel"] == "3"


def test_bad_input_is_explained():
    at = page(processes="9", channel="abc", batch_size="1").run()
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "processes" in warning and "channel" in warning
    assert any("batch of one" in e.value for e in at.error)
    assert not at.get("plotly_chart")


def test_seeds_run_one_job_each_and_pair_plain_with_synchronized_bn():
    # page()'s settings: the first seed's job is the one test_two_processes_train... ran (shared
    # results), so only the second seed's job trains here
    at = page(seeds="2").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    text = " ".join(m.value for m in at.markdown)
    assert "Across 2 seeds" in text and "synchronized BN, 4 per device" in text and "over 2 seeds" in text
