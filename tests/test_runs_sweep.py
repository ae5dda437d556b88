"""Found by an exploratory sweep of the "Your runs" page and the `bnviz` command, and fixed:

- a run of a model without any layer bnviz records, or one that ended before its first recorded
  forward pass, said "No forward pass recorded yet ..." (and the doctor "No problems"), as if
  more were coming;
- LayerNorm / GroupNorm / track_running_stats=False layers were drawn as "batch vs running
  statistics" with the running ones "not recorded", and the batch variance "used to normalize";
- with no run in the runs folder, the page says one "appears here as soon as its first step is
  recorded", and it did not until the user did something; a page showing a finished run (which
  does not poll) had no way to look for runs started since, short of reloading it;
- a run deleted or renamed while shown was reported as "The run in the link cannot be opened";
- the layer histograms' panel titles ran into each other with eight "12 (BatchNorm1d)" layers, and a
  doctor's evidence chart cut its title off beside the finding's text;
- `bnviz runs FILE` said "no such folder" for a file that exists.

Oracles: the run file read with sqlite3, the folder on disk, and what the browser draws.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time

import numpy as np
import plotly.io as pio
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

import bnviz
from bnviz.figures import runs as figs
from conftest import ARTIFACTS, ROOT, start_server, stop_server
from test_figures_runs import batches, mlp, record, values

PAGE = str(ROOT / "pages" / "10_Your_runs.py")
RUN_FILE = "bnviz-run.sqlite"


def page(monkeypatch, runs_dir, **query: str) -> AppTest:
    monkeypatch.setenv("BNVIZ_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "Something went wrong" in e.value]
    return at


def stored(run_dir, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{run_dir / RUN_FILE}?mode=ro", uri=True) as db:
        return db.execute(sql).fetchall()


def figures(at: AppTest) -> dict[str, object]:
    return {f.layout.title.text: f for f in (pio.from_json(c.proto.spec) for c in at.get("plotly_chart"))}


# ----- AppTest -------------------------------------------------------------------------------------
def test_a_run_without_layers_or_without_a_forward_pass_says_why_and_not_yet(monkeypatch, tmp_path):
    with pytest.warns(UserWarning, match="only the scalars"):
        record(tmp_path / "scalars-only", nn.Sequential(nn.Linear(6, 3)), batches(6, 8, 1))
    bnviz.watch(mlp(), tmp_path / "no-forward", every=5).close()
    assert stored(tmp_path / "scalars-only", "SELECT COUNT(*) FROM layers") == [(0,)]
    assert stored(tmp_path / "no-forward", "SELECT COUNT(*) FROM snapshots") == [(0,)]
    assert json.loads(stored(tmp_path / "no-forward", "SELECT value FROM meta WHERE key='status'")[0][0]) == "finished"

    at = page(monkeypatch, tmp_path, run="scalars-only")
    infos = [i.value for i in at.info]
    assert any(i.startswith("This run records no layers: the model has no normalization or activation module")
               for i in infos), infos
    assert "Nothing to check: the run records no normalization layer." in infos
    assert not at.success and not any("yet" in i for i in infos)
    assert list(figures(at)) == ["scalars-only: logged scalars"]

    at = page(monkeypatch, tmp_path, run="no-forward")
    infos = [i.value for i in at.info]
    assert any(i.startswith("This run ended (finished) before a forward pass was recorded") for i in infos), infos
    assert not any("yet" in i for i in infos)


def test_layers_without_running_statistics_are_explained_not_drawn_as_missing(monkeypatch, tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.gn = nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4)
            self.fc, self.ln, self.bn = nn.Linear(4 * 4 * 4, 8), nn.LayerNorm(8), nn.BatchNorm1d(8, track_running_stats=False)
            self.out = nn.Linear(8, 3)

        def forward(self, x):
            return self.out(torch.relu(self.bn(self.ln(self.fc(self.gn(self.conv(x)).flatten(1))))))

    torch.manual_seed(0)
    record(tmp_path / "norms", Net(), batches(6, 8, 2, shape=(1, 6, 6)))
    infos = {json.loads(info)["name"]: json.loads(info) for _, info in stored(tmp_path / "norms", "SELECT idx, info FROM layers")}
    assert not any(i["tracks_running_stats"] for i in infos.values())
    step = stored(tmp_path / "norms", "SELECT MAX(step) FROM snapshots")[0][0]
    run = bnviz.open_run(tmp_path / "norms")
    for layer, own in (("gn", True), ("ln", True), ("bn", False)):
        at = page(monkeypatch, tmp_path, run="norms", layer=layer)
        notes = [i.value for i in at.info if "keeps no running statistics" in i.value]
        assert len(notes) == 1 and notes[0].startswith(f"Layer {layer} ({infos[layer]['kind']}) keeps no running"), notes
        assert ("not what this layer normalizes with" in notes[0]) == own
        assert ("track\\_running\\_stats=False" in notes[0]) == (not own)
        fig = figures(at)[f"{layer}: batch statistics per channel at step {step}"]
        assert "no running statistics: this layer keeps none" in fig.layout.title.subtitle.text
        assert "not recorded" not in fig.layout.title.subtitle.text
        names = {t.name for t in fig.data}
        assert names == {"batch mean", "batch variance, unbiased (x n/(n-1))",
                         "batch variance, biased" + ("" if own else " (used to normalize)")}
        _, mean, _ = run.batch_stats(layer)
        np.testing.assert_array_equal(values(next(t.y for t in fig.data if t.name == "batch mean")), mean[-1])


def test_a_run_renamed_while_shown_is_said_to_be_gone(monkeypatch, tmp_path):
    record(tmp_path / "first", mlp(), batches(6, 8, 3))
    record(tmp_path / "second", mlp(), batches(6, 8, 4))
    at = page(monkeypatch, tmp_path, run="first")
    (tmp_path / "first").rename(tmp_path / "first-renamed")
    at.run()
    [error] = [e.value for e in at.error]
    assert error.startswith("**The run shown is gone from the runs folder (deleted or renamed?).** no run named "
                            "'first'"), error
    assert sorted(at.dataframe[0].value["run"]) == sorted(p.name for p in tmp_path.iterdir())
    # a link to a run that is not there is still a link's problem
    at = page(monkeypatch, tmp_path, run="first")
    assert at.error[0].value.startswith("**The run in the link cannot be opened.**")


def test_a_run_started_while_a_finished_one_is_shown_is_listed_at_a_click(monkeypatch, tmp_path):
    record(tmp_path / "done", mlp(), batches(6, 8, 5))
    at = page(monkeypatch, tmp_path)
    assert at.selectbox(key="runs.view.run").value == "done"
    # a finished run's page does not poll (tests/test_browser_runs.py): no check, a button instead
    assert not any(c.value.startswith(("Watching", "Following")) for c in at.caption)
    record(tmp_path / "new", mlp(), batches(6, 8, 6))
    at.button(key="runs.look").click().run()
    assert sorted(at.dataframe[0].value["run"]) == sorted(p.name for p in tmp_path.iterdir()) == ["done", "new"]
    assert at.selectbox(key="runs.view.run").value == "done"       # what the user looks at stays
    assert at.selectbox(key="runs.view.run").options == ["new", "done"]


def test_an_evidence_title_is_broken_into_lines_that_fit_beside_the_finding():
    finding = type("F", (), dict(title="running statistics far from recent batch statistics (eval-mode collapse)",
                                 layer="layer4.1.downsample.1", series={"a": [1.0], "b": [2.0]}, steps=[0],
                                 unit="x"))()
    fig = figs.finding_evidence(finding)
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) == 2 and all(len(line) <= figs.TITLE_CHARS for line in lines)
    assert " ".join(lines) == f"Evidence: {finding.title} ({finding.layer})"
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0     # below the plot, off the title


# ----- the command line ---------------------------------------------------------------------------
def test_bnviz_runs_of_a_file_says_it_is_not_a_folder(tmp_path):
    record(tmp_path / "run", mlp(), batches(6, 8, 6))
    file = tmp_path / "run" / RUN_FILE
    proc = subprocess.run([sys.executable, "-m", "bnviz", "runs", str(file)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (f"error: {file}: not a folder; give the folder that holds the runs "
                                   f"(`bnviz doctor {file}` reads one run file)")


# ----- in a browser --------------------------------------------------------------------------------
@pytest.fixture
def browser_page(browser):
    """A tall page in the session's browser (conftest): a second Playwright in one process fails
    ("Sync API inside the asyncio loop") once another browser test has started the first."""
    context = browser.new_context(viewport={"width": 1400, "height": 4000})
    pg = context.new_page()
    pg.set_default_timeout(90_000)
    yield pg
    context.close()


@pytest.mark.browser
def test_in_a_browser_runs_that_start_in_the_folder_appear_without_a_reload(browser_page, tmp_path):
    made = tmp_path / "made"
    record(made / "alpha", mlp(), batches(6, 8, 7))
    record(made / "beta", mlp(), batches(6, 8, 8))
    runs = tmp_path / "runs"
    proc, url = start_server(extra_env={"BNVIZ_RUNS_DIR": str(runs)})
    try:
        pg = browser_page
        pg.goto(f"{url}/Your_runs")
        pg.get_by_text("does not exist yet", exact=False).wait_for()
        shutil.copytree(made / "alpha", runs / "alpha")       # as a training process starting would
        started = time.monotonic()
        pg.get_by_role("heading", name="Run alpha").wait_for(timeout=15_000)
        assert time.monotonic() - started < 8
        shutil.copytree(made / "beta", runs / "beta")
        pg.get_by_role("button", name="Look for new runs").click()
        pg.wait_for_function("document.body.innerText.includes('2 run(s)')", timeout=15_000)
        assert sorted(p.name for p in runs.iterdir()) == ["alpha", "beta"]
        pg.get_by_role("heading", name="Run alpha").wait_for()
        assert pg.locator("[data-testid='stException']").count() == 0
    finally:
        stop_server(proc)


@pytest.mark.browser
def test_in_a_browser_panel_and_evidence_titles_do_not_overlap_or_spill(browser_page, tmp_path):
    torch.manual_seed(0)
    layers = [nn.Linear(6, 8)]
    for _ in range(12):
        layers += [nn.BatchNorm1d(8, momentum=0.001), nn.ReLU(), nn.Linear(8, 8)]
    data = [(10 * x + 5, y) for x, y in batches(12, 16, 9)]
    record(tmp_path / "deep", nn.Sequential(*layers, nn.Linear(8, 3)), data)
    proc, url = start_server(extra_env={"BNVIZ_RUNS_DIR": str(tmp_path)})
    try:
        pg = browser_page
        pg.goto(f"{url}/Your_runs?run=deep")
        pg.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 6")
        time.sleep(2)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / "runs_sweep_deep.png"), full_page=True)
        # the histogram figure: one title per shown panel, side by side without touching
        hist = pg.locator(".js-plotly-plot").filter(has_text="per layer at step").first
        titles = [t for t in hist.locator(".annotation-text").all() if "BatchNorm1d" in t.text_content()]
        boxes = sorted((b["x"], b["x"] + b["width"]) for b in (t.bounding_box() for t in titles))
        assert len(boxes) == 8, boxes
        assert all(right <= left for (_, right), (left, _) in zip(boxes, boxes[1:])), boxes
        # an evidence chart's title lies inside its chart
        evidence = pg.locator(".js-plotly-plot").filter(has_text="Evidence: running statistics far").first
        chart, title = evidence.bounding_box(), evidence.locator(".gtitle").bounding_box()
        assert chart["x"] <= title["x"] and title["x"] + title["width"] <= chart["x"] + chart["width"], (chart, title)
    finally:
        stop_server(proc)
