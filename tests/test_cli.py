"""The `bnviz` command (`python -m bnviz` in a checkout): `export` run as a user would, in a
subprocess, checking the files it writes; the parsing of every subcommand; `app`'s streamlit command."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import bnviz as bnviz_package
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


# ----- the command line: subcommands, `bnviz` vs `python -m bnviz` -----------------------------------
BNVIZ = Path(sys.executable).parent / "bnviz"   # the console script of the editable install (make)


def bnviz(*args: str, module: bool = False) -> subprocess.CompletedProcess:
    """``bnviz ARGS`` (the console script) or ``python -m bnviz ARGS`` in a subprocess, as a user runs them."""
    assert BNVIZ.exists(), f"{BNVIZ} is missing: install the package (make test does: pip install -e .)"
    cmd = [sys.executable, "-m", "bnviz"] if module else [str(BNVIZ)]
    return subprocess.run([*cmd, *args], cwd=ROOT / "tests", capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("module", [False, True], ids=["bnviz", "python -m bnviz"])
def test_unknown_subcommand_exits_2_naming_the_valid_ones(module):
    done = bnviz("frobnicate", module=module)
    assert done.returncode == 2
    assert "invalid choice: 'frobnicate'" in done.stderr
    for command in ("app", "export", "runs", "doctor"):
        assert command in done.stderr
    assert "Traceback" not in done.stderr


def test_bnviz_export_is_python_m_bnviz_export(tmp_path):
    """Same arguments, same code, same messages and exit status: the console script and the module."""
    args = ("export", "--out", str(tmp_path / "out"), "--page", "histogram")
    script, module = bnviz(*args), bnviz(*args, module=True)
    assert script.returncode == module.returncode == 2
    assert script.stderr == module.stderr and "unknown page 'histogram'" in script.stderr
    assert not (tmp_path / "out").exists()


def test_export_help_is_the_same_under_both_names_and_lists_the_pages(capsys):
    helps = []
    for prog in ("bnviz", "python -m bnviz"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["export", "--help"], prog=prog)
        assert exit_.value.code == 0
        helps.append(" ".join(capsys.readouterr().out.replace(f"usage: {prog} ", "usage: PROG ").split()))
    assert helps[0] == helps[1]
    assert "usage: PROG export [-h] --out OUT [--page PAGE] [--config CONFIG] [--no-png]" in helps[0]
    assert f"one page: {', '.join(registry())}" in helps[0]


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"bnviz {bnviz_package.__version__}" == "bnviz 0.5.0"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: bnviz") and all(c in out for c in ("app", "export", "runs", "doctor"))


def test_no_subcommand_prints_the_usage_and_exits_2():
    stream = io.StringIO()
    assert cli.main([], stream) == 2
    assert stream.getvalue().startswith("usage: bnviz")


@pytest.mark.parametrize("argv, message", [
    (["app", "--port", "99999"], "port 99999 is outside 1-65535"),
    (["app", "--port", "eighty"], "not a port number: 'eighty'"),
    (["app", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["doctor"], "the following arguments are required: RUN_DIR"),
    (["export", "--page", "why"], "the following arguments are required: --out"),
    (["runs", "a", "b"], "unrecognized arguments: b"),
])
def test_malformed_command_lines_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_help_and_app_do_not_import_torch():
    """`bnviz --help` answers at once, and `bnviz app` hands over to Streamlit without paying for
    torch and plotly, which the app imports in its own process (after its first chart)."""
    probe = ("import sys; from bnviz import cli; cli.parser();"
             "cli._exec = lambda cmd, env: 0; assert cli.main(['app']) == 0;"
             "print(sorted(m for m in ('torch', 'plotly', 'pandas', 'sklearn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ----- bnviz app -------------------------------------------------------------------------------------
@pytest.fixture
def launched(monkeypatch):
    """Run ``cli.main(["app", ...])`` without starting Streamlit: what it would run, with which environment."""
    calls = []
    monkeypatch.setattr(cli, "_exec", lambda cmd, env: calls.append((list(cmd), dict(env))) or 0)
    monkeypatch.delenv(cli.RUNS_ENV, raising=False)

    def launch(*args: str) -> tuple[int, str, list, dict]:
        stream = io.StringIO()
        status = cli.main(["app", *args], stream)
        cmd, env = calls.pop() if calls else (None, None)
        return status, stream.getvalue(), cmd, env
    return launch


def test_app_runs_streamlit_on_loopback_from_the_checkout(launched):
    status, err, cmd, env = launched()
    assert status == 0
    assert cmd == [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
                   "--server.address", "127.0.0.1", "--server.headless", "true",
                   "--browser.serverAddress", "127.0.0.1"]
    assert cli.RUNS_ENV not in env                     # the app's own default, ./runs
    assert f"starting the app from {ROOT / 'app.py'}" in err


def test_app_options(launched, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, err, cmd, env = launched("--runs", "my-runs", "--port", "8600", "--address", "0.0.0.0",
                                     "--", "--server.fileWatcherType", "auto")
    assert status == 0
    assert cmd[5:] == ["--server.address", "0.0.0.0", "--server.headless", "true", "--server.port", "8600",
                       "--server.fileWatcherType", "auto"]   # a wildcard address is no URL for the browser
    assert env[cli.RUNS_ENV] == str(tmp_path / "my-runs")      # absolute: the app may change folder
    assert f"runs are read from {tmp_path / 'my-runs'}" in err
    status, err, cmd, env = launched("--address", "192.168.1.7")
    assert cmd[5:] == ["--server.address", "192.168.1.7", "--server.headless", "true",
                       "--browser.serverAddress", "192.168.1.7"]


def test_app_usage_errors_exit_2_before_starting_anything(launched, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    status, err, cmd, _ = launched("--runs", str(tmp_path / "a-file"))
    assert (status, cmd) == (2, None) and "not a folder" in err

    monkeypatch.setattr(cli, "PACKAGE", tmp_path / "site-packages" / "bnviz")
    status, err, cmd, _ = launched()
    assert (status, cmd) == (2, None)
    assert "cannot find the app" in err and str(tmp_path / "site-packages" / "bnviz" / "_app" / "app.py") in err
    assert "Traceback" not in err
    monkeypatch.undo()

    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "streamlit" else find_spec(name, *a))
    status, err, cmd, _ = launched()
    assert (status, cmd) == (2, None) and "Streamlit is not installed" in err


def test_the_app_script_is_found_in_an_installed_layout_first(tmp_path, monkeypatch):
    """A wheel carries the app as bnviz/_app/ (pyproject.toml); a checkout has it at the root."""
    package = tmp_path / "site-packages" / "bnviz"
    (package / "_app" / "pages").mkdir(parents=True)
    (package / "_app" / "app.py").write_text("")
    monkeypatch.setattr(cli, "PACKAGE", package)
    assert cli.app_script() == package / "_app" / "app.py"
    monkeypatch.setattr(cli, "PACKAGE", ROOT / "bnviz")
    assert cli.app_script() == ROOT / "app.py"


# ----- bnviz runs / bnviz doctor ---------------------------------------------------------------------
def _record(run_dir: Path, batch: int, steps: int, every: int = 10) -> None:
    """A small MLP with one BatchNorm1d trained under bnviz.watch, as a user's loop would."""
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(12, 3, generator=g)
    with bnviz_package.watch(model, run_dir, every=every) as w:
        for _ in range(steps):
            x = torch.randn(batch, 12, generator=g)
            loss = nn.functional.cross_entropy(model(x), (x @ truth).argmax(1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.step(loss=loss.item())


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """healthy (batch 64), proj/tiny-batch (batch 2: BN's "too few values" problem), a text file
    posing as a run, a SQLite file of another program, and one rank of a distributed job."""
    import sqlite3

    from bnviz import store
    root = tmp_path_factory.mktemp("runs")
    _record(root / "healthy", batch=64, steps=50)
    _record(root / "proj" / "tiny-batch", batch=2, steps=30)
    (root / "damaged").mkdir()
    (root / "damaged" / store.RUN_FILE).write_text("not a database")
    (root / "foreign").mkdir()
    with sqlite3.connect(root / "foreign" / store.RUN_FILE) as db:
        db.execute("CREATE TABLE songs (title TEXT)")
    store.RunWriter(root / "job" / "rank-1", layers=[], meta={"rank": 1, "world_size": 2}).close()
    return root


def run_cli(*args: str) -> tuple[int, str, str]:
    """``cli.main(args)`` in this process: exit status, stdout text, stderr text."""
    out, err = io.StringIO(), io.StringIO()
    return cli.main(list(args), err, out=out), out.getvalue(), err.getvalue()


def test_runs_lists_every_run_with_status_step_layers_and_the_damaged_ones_errors(runs_dir):
    status, out, err = run_cli("runs", str(runs_dir))
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["name", "status", "last", "step", "layers", "updated", "rank"]
    rows = {line.split()[0]: line.split() for line in lines[1:6]}
    assert set(rows) == {"healthy", "proj/tiny-batch", "damaged", "foreign", "job/rank-1"}
    assert rows["healthy"][1:4] == ["finished", "49", "1"] and rows["healthy"][-1] == "-"
    assert rows["proj/tiny-batch"][1:4] == ["finished", "29", "1"]
    assert rows["damaged"][1:4] == ["damaged", "-", "-"]
    assert rows["job/rank-1"][1:4] == ["finished", "-", "0"] and rows["job/rank-1"][-3:] == ["1", "of", "2"]
    assert f"damaged: {runs_dir / 'damaged' / 'bnviz-run.sqlite'} is not a bnviz run" in out
    assert "foreign: " in out and "another program" in out
    assert out.rstrip().endswith(f"5 run(s) in {runs_dir}, 2 damaged")


def test_runs_reads_the_folder_the_app_reads(runs_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(cli.RUNS_ENV, str(runs_dir / "proj"))
    status, out, _ = run_cli("runs")
    assert status == 0 and "tiny-batch" in out and "healthy" not in out
    monkeypatch.delenv(cli.RUNS_ENV)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert run_cli("runs") == (0, "no runs in runs\n", "")               # ./runs, as the app


def test_runs_of_a_missing_folder_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cli.RUNS_ENV, raising=False)
    status, out, err = run_cli("runs")
    assert (status, out) == (2, "") and err.startswith("error: runs: no such folder") and len(err.splitlines()) == 1
    status, _, err = run_cli("runs", str(tmp_path / "nope"))
    assert status == 2 and f"{tmp_path / 'nope'}: no such folder" in err


def test_doctor_on_a_healthy_run_exits_0(runs_dir):
    status, out, err = run_cli("doctor", str(runs_dir / "healthy"))
    assert status == 0 and err == ""
    assert out.startswith(f"bnviz doctor: {runs_dir / 'healthy'} (finished, last step 49, 1 normalization layer)")
    assert "PROBLEM" not in out and "WARNING" not in out
    assert "ok       too few values per channel: not found (layer 1)" in out
    assert out.rstrip().endswith("0 problem(s), 0 warning(s), 6 check(s) passed")


def test_doctor_reports_a_problem_with_evidence_and_fix_and_exits_1(runs_dir):
    from bnviz.doctor import diagnose
    status, out, _ = run_cli("doctor", str(runs_dir / "proj" / "tiny-batch"))
    assert status == 1
    problem = out.split("\n\n")[1].splitlines()
    assert problem[0] == "PROBLEM  too few values per channel [layer 1]"
    assert problem[1].startswith("         evidence: as few as 2 values per channel")
    assert any(line.startswith("         fix: ") for line in problem)
    # worst first (this run has no warning since the doctor stopped calling a short run at
    # momentum 0.1 a wrong momentum)
    order = [out.index(heading) for heading in ("PROBLEM", "WARNING", "ok       ") if heading in out]
    assert "PROBLEM" in out and "ok       " in out and order == sorted(order)
    findings = diagnose(bnviz_package.open_run(runs_dir / "proj" / "tiny-batch"))
    counts = [sum(f.severity == s for f in findings) for s in ("problem", "warning", "ok")]
    assert out.rstrip().endswith("{} problem(s), {} warning(s), {} check(s) passed".format(*counts))


def test_doctor_json(runs_dir):
    status, out, _ = run_cli("doctor", str(runs_dir / "proj" / "tiny-batch"), "--json")
    assert status == 1
    report = json.loads(out)
    assert report["run"] == str(runs_dir / "proj" / "tiny-batch") and report["status"] == "finished"
    assert report["last_step"] == 29
    assert all(list(f) == ["check", "layer", "severity", "title", "evidence", "fix"] for f in report["findings"])
    few = [f for f in report["findings"] if f["check"] == "few_values"]
    assert [(f["layer"], f["severity"]) for f in few] == [("1", "problem")]
    assert report["counts"]["problem"] == 1 and sum(report["counts"].values()) == len(report["findings"])
    status, out, _ = run_cli("doctor", "--json", str(runs_dir / "healthy"))
    assert status == 0 and json.loads(out)["counts"]["problem"] == 0


@pytest.mark.parametrize("where, message", [
    ("nope", "no bnviz run at {root}/nope: it does not exist"),
    ("proj", "no bnviz run in {root}/proj: it holds no bnviz-run.sqlite"),
    ("damaged", "{root}/damaged/bnviz-run.sqlite is not a bnviz run: it is not a SQLite database"),
    ("foreign", "{root}/foreign/bnviz-run.sqlite is not a bnviz run: it is a SQLite database of another program"),
    ("damaged/bnviz-run.sqlite", "{root}/damaged/bnviz-run.sqlite is not a bnviz run"),
])
def test_doctor_on_a_missing_or_damaged_run_is_one_line_and_exit_2(runs_dir, where, message):
    status, out, err = run_cli("doctor", str(runs_dir / where))
    assert (status, out) == (2, "")
    assert err.startswith("error: " + message.format(root=runs_dir)) and len(err.splitlines()) == 1


def test_runs_and_doctor_from_the_console_script(runs_dir):
    """As a user types them: output on stdout, the exit statuses, never a traceback."""
    done = bnviz("runs", str(runs_dir))
    assert done.returncode == 0 and "proj/tiny-batch" in done.stdout and "Traceback" not in done.stderr
    done = bnviz("doctor", str(runs_dir / "proj" / "tiny-batch"))
    assert done.returncode == 1 and "PROBLEM  too few values per channel" in done.stdout
    done = bnviz("doctor", str(runs_dir / "foreign"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and "another program" in done.stderr and "Traceback" not in done.stderr
