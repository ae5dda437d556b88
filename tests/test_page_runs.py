"""The "Your runs" page under Streamlit's AppTest: it lists the runs of the runs folder, opens the
one a link names (and nothing outside the folder), explains damaged runs and an empty folder,
follows a run that is still written, shows the doctor's findings, and every number it shows is
the run store's."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import plotly.io as pio
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

import bnviz
from bnviz.store import RUN_FILE, list_runs, open_run
from conftest import ROOT
from test_figures_runs import batches, frozen_mlp, mlp, record, values

PAGE = str(ROOT / "pages" / "10_Your_runs.py")


def unescape(markdown: str) -> str:
    """Text as shown: without bold markers, and the page escapes Markdown's special characters in
    names and paths."""
    return re.sub(r"\\(.)", r"\1", markdown.replace("**", ""))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Three runs, oldest first: a nested one, a planted fault, a healthy one with a held-out set."""
    root = tmp_path_factory.mktemp("runs")
    record(root / "team" / "exp-1", mlp(4), batches(20, 16, 5))
    record(root / "frozen", frozen_mlp(), batches(40, 32, 2))
    record(root / "mlp", mlp(), batches(40, 32, 0), holdout=batches(1, 64, 9)[0])
    return root


def app(monkeypatch, runs_dir, **query: str) -> AppTest:
    monkeypatch.setenv("BNVIZ_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(PAGE, default_timeout=120)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def charts(at: AppTest) -> dict[str, dict]:
    """Chart title -> the figure as the browser gets it."""
    figs = [pio.from_json(c.proto.spec) for c in at.get("plotly_chart")]
    return {f.layout.title.text: f for f in figs}


def errors(at: AppTest) -> list[str]:
    return [unescape(e.value) for e in at.error]


def assert_no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not [e for e in errors(at) if e.startswith("Something went wrong")], errors(at)


def test_the_page_lists_the_runs_and_shows_the_newest(monkeypatch, root):
    at = app(monkeypatch, root)
    assert_no_traceback(at)
    assert not at.error and not at.warning
    table = at.dataframe[0].value
    listed = list_runs(root)
    assert list(table["run"]) == [r.name for r in listed] == ["mlp", "frozen", "team/exp-1"]
    assert list(table["status"]) == ["finished"] * 3
    assert list(table["last step"]) == [r.last_step for r in listed] == [39, 39, 19]
    assert list(table["layers"]) == [1, 1, 1]
    assert at.selectbox(key="runs.view.run").value == "mlp"
    assert at.query_params["run"] == "mlp"
    assert str(root) in unescape(at.caption[1].value)


def test_a_link_picks_the_run_and_the_numbers_shown_are_the_stores(monkeypatch, root):
    at = app(monkeypatch, root, run="mlp")
    assert_no_traceback(at)
    assert at.selectbox(key="runs.view.run").value == "mlp"
    assert any(h.value == "Run mlp" for h in at.subheader)
    run = open_run(root / "mlp")
    shown = metrics(at)
    assert shown["last step"] == str(run.meta["last_step"]) == "39"
    assert shown["recorded steps"] == str(len(run.snapshot_steps)) == "8"
    assert shown["normalization layers"] == str(len(run.norm_layers)) == "1"
    assert shown["status"] == run.status == "finished"
    # the held-out accuracies quoted are the stored ones
    _, acc = run.scalars("holdout_acc")
    _, precise = run.scalars("holdout_precise_acc")
    assert any(f"{acc[-1]:.1%} in eval mode" in c.value and f"{precise[-1]:.1%} with them recomputed" in c.value
               for c in at.caption)
    # the per-channel figure holds the stored statistics of the newest recorded step
    step = int(run.snapshot_steps[-1])
    fig = charts(at)[f"1 (BatchNorm1d): batch vs running statistics per channel at step {step}"]
    _, bmean, bvar = run.batch_stats("1")
    _, rmean, rvar = run.running_stats("1")
    by_name = {t.name: values(t.y) for t in fig.data}
    np.testing.assert_array_equal(by_name["batch mean"], bmean[-1])
    np.testing.assert_array_equal(by_name["running variance (unbiased, as torch stores it)"], rvar[-1])
    assert at.select_slider(key="runs.view.step").value == step


def test_a_nested_run_is_found_by_its_relative_name(monkeypatch, root):
    at = app(monkeypatch, root, run="team/exp-1")
    assert_no_traceback(at)
    assert at.selectbox(key="runs.view.run").value == "team/exp-1"
    assert metrics(at)["last step"] == "19"
    at = app(monkeypatch, root, run="team/./exp-1/")    # the same folder, spelt otherwise
    assert not at.error and at.selectbox(key="runs.view.run").value == "team/exp-1"


@pytest.mark.parametrize("name", ["../../etc", "/etc", "..", "mlp/../../outside", "nope", "[click](http://x.test)"])
def test_a_run_name_outside_the_folder_or_unknown_is_refused_with_an_explanation(monkeypatch, root, name):
    at = app(monkeypatch, root, run=name)
    assert_no_traceback(at)
    [error] = errors(at)
    assert repr(name) in error and str(root) in error, error
    assert "Showing the newest run, mlp, instead." in error
    assert not re.search(r"(?<!\\)\[", at.error[0].value)    # a name is never Markdown (a link, here)
    assert at.selectbox(key="runs.view.run").value == "mlp"
    assert at.query_params["run"] == "mlp"                  # the link written back holds no bad name


def test_a_damaged_or_foreign_run_file_is_named_with_its_problem(monkeypatch, root, tmp_path):
    shutil.copytree(root / "mlp", tmp_path / "truncated")
    file = tmp_path / "truncated" / RUN_FILE
    with open(file, "r+b") as f:
        f.truncate(file.stat().st_size // 3)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / RUN_FILE).write_text("not a database at all, " * 100)
    for name in ("truncated", "foreign"):
        at = app(monkeypatch, tmp_path, run=name)
        assert_no_traceback(at)
        [error] = errors(at)
        assert error.startswith("This run cannot be read.") and str(tmp_path / name / RUN_FILE) in error, error
        assert "damaged" in error or "not a bnviz run" in error or "not a SQLite database" in error, error
        table = at.dataframe[0].value
        assert table.set_index("run").loc[name, "status"] == "damaged"
        assert not at.get("plotly_chart")


@pytest.mark.parametrize("exists", [True, False], ids=["empty folder", "missing folder"])
def test_without_runs_the_page_says_how_to_make_one_and_where_it_looks(monkeypatch, tmp_path, exists):
    folder = tmp_path / "runs"
    if exists:
        folder.mkdir()
    at = app(monkeypatch, folder, run="my-resnet", layer="3", evil="<script>")
    assert_no_traceback(at)
    [info] = [unescape(i.value) for i in at.info]
    assert ("holds no runs yet" if exists else "does not exist yet") in info
    assert str(folder) in info and "BNVIZ_RUNS_DIR" in info and "bnviz app --runs DIR" in info
    assert f'with bnviz.watch(model, "{folder}/my-run", every=20) as w:' in info
    assert "w.step(loss=loss.item())" in info
    assert f"python examples/watch_resnet.py --run-dir {folder}/resnet-example" in info
    [error] = errors(at)                                          # the link's run is not there either
    assert "'my-resnet'" in error and str(folder) in error
    assert dict(at.query_params) == {}


def test_the_doctors_problem_is_shown_with_its_evidence_and_fix(monkeypatch, root):
    at = app(monkeypatch, root, run="frozen")
    assert_no_traceback(at)
    [problem] = errors(at)
    assert problem.startswith("Problem: parameters frozen but running statistics still moving, layer `1`")
    assert "requires_grad=False but the layer ran in train() mode" in problem
    assert "Fix: Freezing parameters does not freeze BN" in problem
    fig = charts(at)["Evidence: parameters frozen but running statistics still moving (1)"]
    assert fig.layout.yaxis.title.text == "absolute change since the previous record"
    assert any(c.value.startswith("BN doctor: 1 problem(s), 0 warning(s) in 6 checks") for c in at.caption)
    quiet = at.dataframe[1].value
    assert len(quiet) == 5 and "frozen" not in " ".join(quiet["check"])
    # the healthy run: nothing flagged, and every check listed as quiet
    at = app(monkeypatch, root, run="mlp")
    assert not at.error and not at.warning
    assert at.success[0].value.startswith("No problems or warnings")
    assert len(at.dataframe[1].value) == 6


def test_display_controls_redraw_and_live_in_the_link(monkeypatch, root):
    at = app(monkeypatch, root, run="mlp")
    steps = [int(s) for s in open_run(root / "mlp").snapshot_steps]
    at.select_slider(key="runs.view.step").set_value(steps[1]).run()
    at.radio(key="runs.view.tap").set_value("post_activation").run()
    at.toggle(key="runs.view.log_y").set_value(True).run()
    assert_no_traceback(at)
    titles = set(charts(at))
    assert f"Post-activation per layer at step {steps[1]}" in titles
    assert "Post-activation, all units of 1 (BatchNorm1d): 15/50/85th percentiles" in titles
    assert f"1 (BatchNorm1d): batch vs running statistics per channel at step {steps[1]}" in titles
    assert (at.query_params["step"], at.query_params["tap"], at.query_params["log_y"]) == (str(steps[1]),
                                                                                           "post_activation", "True")
    # the same link in a new session shows the same view
    again = app(monkeypatch, root, **dict(at.query_params))
    assert set(charts(again)) == titles
    # another run: the settings of the first one that do not fit are reset
    at.selectbox(key="runs.view.run").set_value("team/exp-1").run()
    assert_no_traceback(at)
    assert at.select_slider(key="runs.view.step").value == int(open_run(root / "team" / "exp-1").snapshot_steps[-1])


def test_a_link_with_settings_the_run_cannot_show_falls_back_to_its_defaults(monkeypatch, root):
    at = app(monkeypatch, root, run="mlp", layer="<svg onload=alert(1)>", tap="bogus", step="1e308", log_y="maybe")
    assert_no_traceback(at)
    assert at.selectbox(key="runs.view.layer").value == "1"
    assert at.radio(key="runs.view.tap").value == "norm_output"
    assert at.select_slider(key="runs.view.step").value == 35
    assert all("<svg" not in v and "bogus" not in v for v in at.query_params.values())


def test_a_run_still_being_written_is_followed(monkeypatch, tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = iter(batches(30, 16, 7))

    def train(w, n):
        for _ in range(n):
            x, y = next(data)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.step(loss=loss.item())

    w = bnviz.watch(model, tmp_path / "live", every=2)
    try:
        train(w, 6)
        at = app(monkeypatch, tmp_path, run="live")
        assert_no_traceback(at)
        assert metrics(at)["status"] == "running"
        # steps 0-5 are done; step 5 is not committed yet (a commit at each recorded step, else
        # every COMMIT_EVERY_S): the page shows what a reader sees
        assert metrics(at)["last step"] == str(open_run(tmp_path / "live").meta["last_step"]) in ("4", "5")
        assert any(c.value.startswith("Following live") for c in at.caption)
        assert at.select_slider(key="runs.view.step").value == 4
        train(w, 5)                                    # step 10 is recorded: committed at once
        at.run()
        assert metrics(at)["last step"] == "10"
        assert at.select_slider(key="runs.view.step").value == 10   # the newest step, followed
    finally:
        w.close()
    at.run()
    assert metrics(at)["status"] == "finished"
    assert not any(c.value.startswith("Following live") for c in at.caption)
    assert at.query_params["run"] == "live"


def test_a_tap_the_layer_lacks_is_explained_instead_of_drawn_empty(monkeypatch, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.BatchNorm1d(8),
                          nn.Linear(8, 3))
    record(tmp_path / "run", model, batches(10, 16, 4))
    at = app(monkeypatch, tmp_path, layer="4", tap="post_activation")
    assert_no_traceback(at)
    [info] = [unescape(i.value) for i in at.info]
    assert info.startswith("Layer 4 has no post-activation (output of the nonlinearity)")
    titles = set(charts(at))
    assert not [t for t in titles if t.startswith("Post-activation, all units") or t.startswith("Post-activation of")]
    assert "Post-activation per layer at step 5" in titles and "4 (BatchNorm1d): gamma and beta over training " \
        "(one line per channel)" in titles
    assert any("Empty: 4, with nothing at this tap" in c.value for c in at.caption)


def test_names_and_paths_are_shown_as_they_are(monkeypatch, root, tmp_path):
    """Markdown characters in a folder or run name are neither interpreted nor shown escaped."""
    folder = tmp_path / "my_runs_*2*"
    shutil.copytree(root / "team" / "exp-1", folder / "run_[1]")
    at = app(monkeypatch, folder)
    assert_no_traceback(at)
    assert f"Runs folder: `{folder}`" in at.caption[1].value               # inline code: raw
    assert any(h.value == r"Run run\_\[1\]" for h in at.subheader)         # escaped: shown as run_[1]
    assert at.selectbox(key="runs.view.run").value == "run_[1]"


KILLED = textwrap.dedent("""
    import sys, time
    import torch
    from torch import nn
    import bnviz

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    w = bnviz.watch(model, sys.argv[1], every=1)
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(torch.randn(16, 6)), torch.randint(0, 3, (16,)))
        w.step(loss=loss.item())
    print("recorded", flush=True)
    time.sleep(600)
""")


def test_a_killed_training_process_shows_as_stopped_and_is_no_longer_followed(monkeypatch, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path / "job")], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "recorded"
        at = app(monkeypatch, tmp_path, run="job")
        assert_no_traceback(at)
        assert metrics(at)["status"] == "running" and metrics(at)["last step"] == "2"
        assert any(c.value.startswith("Following live") for c in at.caption)
    finally:
        proc.kill()
        proc.wait(10)
    at.run()
    assert_no_traceback(at)
    assert metrics(at)["status"] == "stopped" and metrics(at)["last step"] == "2"
    assert unescape(at.info[0].value).startswith("The training process is gone without closing the run")
    assert not any(c.value.startswith("Following live") for c in at.caption)
