"""`python -m bnviz export`, run as a user would: in a subprocess, checking the files it writes."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bnviz import cli
from bnviz.config import Config
from bnviz.export import CHROMIUM_HELP, chromium_path
from bnviz.views import registry

from conftest import png_size

ROOT = Path(__file__).resolve().parents[1]


def export(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnviz", "export", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=600)


@pytest.mark.skipif(chromium_path() is None, reason=CHROMIUM_HELP)
def test_one_page_from_a_link_writes_png_and_csv(tmp_path):
    link = "http://localhost:8501/Figure_1_reproduction?steps=50&lr=99&mnist=1"
    done = export("--out", str(tmp_path), "--page", "figure1", "--config", link)
    assert done.returncode == 0, done.stderr
    assert "warning: lr: 99 is outside" in done.stderr            # clamped by from_query, said so
    assert "warning: ignored unknown setting 'mnist'" in done.stderr
    assert "[1/3] figure1: training with BN" in done.stderr and "[3/3] figure1: drawing figures" in done.stderr
    files = sorted(p.name for p in (tmp_path / "figure1").iterdir())
    assert files == ["figure-1-reproduction.csv", "figure-1-reproduction.png"]
    png = (tmp_path / "figure1" / "figure-1-reproduction.png").read_bytes()
    assert png_size(png) == (1800, 1040)                           # 900 x 520 at scale 2
    frame = pd.read_csv(tmp_path / "figure1" / "figure-1-reproduction.csv")
    assert list(frame.columns) == ["trace", "x", "y"]
    acc = frame[frame.trace == "with BN: test accuracy"]
    assert list(acc.x) == [0, 50]                                  # eval every 50 steps of 50
    assert acc.y.between(0, 1).all()


def run_main(*args: str) -> tuple[int, str]:
    """The same command in this process (no interpreter start-up): exit status and stderr text."""
    stream = io.StringIO()
    return cli.main(["export", *args], stream), stream.getvalue()


def test_csv_only_and_experiment_progress(tmp_path):
    status, err = run_main("--out", str(tmp_path), "--page", "why", "--no-png", "--config", "?steps=20&depth=2")
    assert status == 0, err
    names = sorted(p.name for p in (tmp_path / "why").iterdir())
    assert names == ["learning-rate-sweep.csv", "loss-landscape.csv", "noisy-bn.csv"]
    assert "[1/1] why: drawing figures" in err
    sweep = pd.read_csv(tmp_path / "why" / "learning-rate-sweep.csv")
    assert {"with BN", "without BN"} <= set(sweep.trace)


def test_without_a_browser_csvs_are_written_and_the_exit_status_says_pngs_are_missing(tmp_path):
    done = export("--out", str(tmp_path), "--page", "inside", "--config", "?steps=20",
                  env={"BROWSER_PATH": str(tmp_path / "no-such-browser")})
    assert done.returncode == 1, done.stderr
    assert "PNG images are missing" in done.stderr and "apt-get install -y chromium" in done.stderr
    written = sorted(p.suffix for p in (tmp_path / "inside").iterdir())
    assert written and set(written) == {".csv"}
    assert "Traceback" not in done.stderr


def test_unknown_page_lists_the_valid_ones(tmp_path):
    done = export("--out", str(tmp_path / "out"), "--page", "histogram")
    assert done.returncode == 2
    assert "unknown page 'histogram'" in done.stderr
    for name in ("inside", "why", "figure1"):
        assert name in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_bad_configuration_file_exits_2_without_a_traceback(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    done = export("--out", str(tmp_path / "out"), "--page", "figure1", "--config", str(path))
    assert done.returncode == 2
    assert "is not valid JSON" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "must hold a JSON object"),
    ('{"stepz": 10}', "unknown setting(s) 'stepz'"),
    ('{"steps": [1, 2]}', "must be a single number"),
    ('{"batch_size": 1}', "cannot train"),
    ('{"dataset": "mnist"}', "MNIST data not found"),
    ("\udcff", "cannot read configuration file"),
])
def test_bad_configuration_is_a_clear_error(tmp_path, monkeypatch, content, message):
    monkeypatch.setenv("BNVIZ_DATA_DIR", str(tmp_path / "no-data"))
    path = tmp_path / "config.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    status, err = run_main("--out", str(tmp_path / "out"), "--page", "figure1", "--config", str(path))
    assert status == 2
    assert message in err
    assert not (tmp_path / "out").exists()


def test_output_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    status, err = run_main("--out", str(tmp_path / "taken" / "figs"), "--page", "figure1")
    assert status == 2 and "cannot create the output folder" in err


def test_missing_file_that_is_not_a_link(tmp_path):
    status, err = run_main("--out", str(tmp_path), "--config", str(tmp_path / "nope.json"))
    assert status == 2 and "no such file, and not a link" in err


def test_json_values_go_through_the_same_validation_as_links(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"momentum": None, "standardize": False, "lr": 0.1, "activation": "tanh"}))
    settings = cli.read_settings(str(path))
    view = registry()["figure1"]
    config, notes = cli.page_config(view, settings)
    assert notes == []
    assert config == view.default.replace(momentum=None, standardize=False, lr=0.1, activation="tanh")
    config, notes = cli.page_config(view, cli.read_settings("?steps=abc&width=3000"))
    assert config.steps == view.default.steps and config.width == 512
    assert any("steps" in n for n in notes) and any("width" in n for n in notes)
    assert cli.page_config(view, cli.read_settings("http://localhost:8501/"))[0] == view.default
    assert isinstance(config, Config)


def test_progress_lines_and_experiment_reports():
    from bnviz.views import View
    stream = io.StringIO()
    progress = cli.Progress(total=2, stream=stream, interval=0.0)
    progress.start("why: training with BN")
    progress.update("step 10/20")

    def figures(config, runs, progress=None):
        progress(1, 2, "loss landscape: with BN: step 5/10")
        return {}
    view = View("fake", "Fake", Config(), lambda c: {}, figures)
    progress.start("fake: drawing figures")
    assert cli._figures(view, Config(), {}, progress) == {}
    assert stream.getvalue().splitlines() == [
        "[1/2] why: training with BN", "[1/2] why: training with BN: step 10/20",
        "[2/2] fake: drawing figures", "[2/2] fake: drawing figures: loss landscape: with BN: step 5/10"]
    plain = View("plain", "Plain", Config(), lambda c: {}, lambda config, runs: {"x": None})
    assert cli._figures(plain, Config(), {}, progress) == {"x": None}
