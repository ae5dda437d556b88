"""bnviz as a package: `pip install .` into a fresh virtual environment, then used from another folder.

The installed copy must work on its own: `import bnviz`, the `bnviz` console script, and `bnviz app`
serving the app from the files the wheel carries (``bnviz/_app/``: app.py, pages/ and
.streamlit/config.toml; see pyproject.toml). To stay offline and fast the new environment gets no
dependencies of its own: a ``.pth`` line makes this ``.venv``'s site-packages visible (torch,
streamlit, pip, setuptools), and bnviz is built with ``--no-deps --no-build-isolation``. A plain
path line in a ``.pth`` does not run the ``.pth`` files of that folder, so the editable install of
the repository in ``.venv`` (its import hook) stays inactive; every test still checks that
``bnviz`` is imported from the new environment, and the commands run outside the repository.

The build reads a copy of the project's files in a temporary folder: setuptools writes build/ and
*.egg-info next to the sources, and a stale build/lib would leak deleted modules into the wheel.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What the build reads: pyproject.toml and the files it names (requirements.txt for the
# dependencies, README.md for the description), the package, and the app shipped inside it.
BUILD_FILES = ("pyproject.toml", "requirements.txt", "README.md", "app.py")
BUILD_DIRS = ("bnviz", "pages", ".streamlit")
# The tests that build environments take ~25 s together on an idle machine (most of it Python
# processes importing torch), over a minute on a busy one.
SLOW = pytest.mark.slow
# pyproject.toml reads the version from bnviz/__init__.py: the same text, not an import.
VERSION = re.search(r'^__version__ = "([^"]+)"', (ROOT / "bnviz" / "__init__.py").read_text(), re.M).group(1)


def _run(cmd: list[str], cwd: Path, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"{cmd} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _source_copy(dest: Path) -> Path:
    dest.mkdir()
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, dest / name)
    for name in BUILD_DIRS:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _venv(path: Path) -> tuple[Path, Path]:
    """A new environment without pip whose imports fall back to this .venv's packages; its python
    and site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=60)
    python = path / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=path).stdout.strip())
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "zz_bnviz_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return python, site


def _pip_install(python: Path, *args: str) -> None:
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", *args],
         cwd=python.parent, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _installed_files(package: Path) -> set[str]:
    return {str(p.relative_to(package)) for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


# ----- fast checks of pyproject.toml ---------------------------------------------------------------
def test_every_subpackage_is_listed_in_pyproject():
    """The package list is explicit (a package-dir mapping cannot be combined with packages.find):
    a new folder of bnviz/ must be added to it, or the wheel silently lacks it."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bnviz").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    missing = sorted(found - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert {"bnviz", "bnviz._app", "bnviz._app.pages"} <= listed
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"bnviz._app": ".", "bnviz._app.pages": "pages"}


def test_dependencies_are_the_pins_of_requirements_txt():
    project = PYPROJECT["project"]
    assert project["name"] == "bnviz" and project["requires-python"] == ">=3.10"
    assert sorted(project["dynamic"]) == ["dependencies", "version"] and "version" not in project
    assert PYPROJECT["tool"]["setuptools"]["dynamic"] == {"version": {"attr": "bnviz.__version__"},
                                                          "dependencies": {"file": ["requirements.txt"]}}
    assert project["scripts"] == {"bnviz": "bnviz.cli:main"}
    pins = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert "torch==2.13.0" in pins and all("==" in p for p in pins), pins


# ----- pip install . ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """bnviz installed non-editable into a new environment: (python, bin folder, installed package folder)."""
    tmp = tmp_path_factory.mktemp("install")
    source = _source_copy(tmp / "src")
    python, site = _venv(tmp / "venv")
    _pip_install(python, str(source))
    return python, python.parent, site / "bnviz"


@pytest.fixture
def elsewhere(tmp_path):
    """A working folder outside the repository (so the repository's bnviz is not on sys.path)."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@SLOW
def test_installed_copy_is_imported_from_the_new_environment(installed, elsewhere):
    python, _, package = installed
    probe = ("import json, bnviz, bnviz.cli;"
             "print(json.dumps({'file': bnviz.__file__, 'app': str(bnviz.cli.app_script()),"
             "'version': bnviz.cli.version()}))")
    seen = json.loads(_run([str(python), "-c", probe], cwd=elsewhere).stdout)
    assert Path(seen["file"]) == package / "__init__.py"
    assert Path(seen["app"]) == package / "_app" / "app.py"
    assert seen["version"] == VERSION == "0.5.0"
    # The whole package and the app, nothing else: every module of the repository, the entry script,
    # its pages and the Streamlit settings, byte for byte.
    expected = {str(p.relative_to(ROOT / "bnviz")) for p in (ROOT / "bnviz").rglob("*.py")
                if "__pycache__" not in p.parts}
    app = {"_app/app.py", "_app/.streamlit/config.toml", *(f"_app/pages/{p.name}" for p in (ROOT / "pages").glob("*.py"))}
    assert _installed_files(package) == expected | app
    for rel, src in [("_app/app.py", ROOT / "app.py"), ("_app/.streamlit/config.toml", ROOT / ".streamlit" / "config.toml"),
                     *((f"_app/pages/{p.name}", p) for p in (ROOT / "pages").glob("*.py"))]:
        assert (package / rel).read_bytes() == src.read_bytes(), rel


@SLOW
def test_installed_metadata_has_the_version_and_pins_the_requirements(installed, elsewhere):
    python, _, _ = installed
    version, requires = json.loads(_run([str(python), "-c", "import json, importlib.metadata as m;"
                                         "print(json.dumps([m.version('bnviz'), m.requires('bnviz')]))"],
                                        cwd=elsewhere).stdout)
    assert version == VERSION
    pins = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert requires == pins


@SLOW
def test_console_script_help_version_and_runs(installed, elsewhere):
    _, bin_dir, _ = installed
    bnviz = str(bin_dir / "bnviz")
    done = _run([bnviz, "--help"], cwd=elsewhere)
    for command in ("app", "export", "runs", "doctor"):
        assert command in done.stdout
    assert _run([bnviz, "--version"], cwd=elsewhere).stdout.strip() == f"bnviz {VERSION}"
    done = _run([bnviz, "app", "--help"], cwd=elsewhere)
    assert "--runs" in done.stdout and "--address" in done.stdout
    bad = _run([bnviz, "frobnicate"], cwd=elsewhere, check=False)
    assert bad.returncode == 2 and "invalid choice: 'frobnicate'" in bad.stderr
    (elsewhere / "runs").mkdir()
    done = _run([bnviz, "runs", str(elsewhere / "runs")], cwd=elsewhere)
    assert done.stdout == f"no runs in {elsewhere / 'runs'}\n"


@SLOW
def test_streamlit_reads_the_shipped_settings(installed, elsewhere):
    """`bnviz app` runs bnviz/_app/app.py; Streamlit reads .streamlit/config.toml beside the main
    script (what `streamlit run` does before it starts the server), so the installed app keeps the
    repository's settings from any working folder."""
    python, _, package = installed
    wanted = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    keys = [f"{section}.{key}" for section, values in wanted.items() for key in values]
    probe = ("import json, sys; from streamlit import config;"
             "config._main_script_path = sys.argv[1]; config.get_config_options(force_reparse=True);"
             "print(json.dumps({k: config.get_option(k) for k in sys.argv[2:]}))")
    seen = json.loads(_run([str(python), "-c", probe, str(package / "_app" / "app.py"), *keys], cwd=elsewhere).stdout)
    assert seen == {f"{s}.{k}": v for s, values in wanted.items() for k, v in values.items()}


APP_PROBE = """
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=180)
at.session_state["steps"] = 100
at.run()
print(json.dumps({"exceptions": [e.value for e in at.exception], "errors": [e.value for e in at.error],
                  "charts": len(at.get("plotly_chart")), "links": [l.proto.page for l in at.get("page_link")]}))
"""


@SLOW
def test_the_installed_app_draws_its_home_page_with_links_to_every_page(installed, elsewhere):
    """The installed app.py runs (its imports resolve to the installed package) and finds the
    installed pages/ beside it: the home page trains, draws and links every page."""
    python, _, package = installed
    seen = json.loads(_run([str(python), "-c", APP_PROBE, str(package / "_app" / "app.py")], cwd=elsewhere,
                           timeout=300).stdout)
    assert seen["exceptions"] == [] and seen["errors"] == []
    assert seen["charts"] >= 2
    from bnviz import navigation
    # every page but the home page itself, in the sidebar's order (its sections)
    assert seen["links"] == [e.url_path for entries in navigation.sections(ROOT).values() for e in entries
                             if e.number != navigation.HOME]


@SLOW
@pytest.mark.timeout(120)
def test_bnviz_app_serves_the_installed_app(installed, elsewhere):
    _, bin_dir, package = installed
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen([str(bin_dir / "bnviz"), "app", "--port", str(port), "--runs", str(elsewhere / "runs")],
                            cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    status, body, index = None, "", None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as reply:
                    status, body = reply.status, reply.read().decode()
                    break
            except OSError:
                time.sleep(0.25)
        if status == 200:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
                index = reply.status
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)   # our own session: the server (bnviz became it) alone
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
    assert (status, body) == (200, "ok"), err
    assert index == 200
    assert f"starting the app from {package / '_app' / 'app.py'}" in err
    assert f"runs are read from {elsewhere / 'runs'}" in err
    assert f"127.0.0.1:{port}" in out + err


# ----- pip install -e . ------------------------------------------------------------------------------
@SLOW
def test_editable_install_runs_the_sources(tmp_path):
    source = _source_copy(tmp_path / "src")
    python, site = _venv(tmp_path / "venv")
    _pip_install(python, "-e", str(source))
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    probe = "import json, bnviz.cli as c; print(json.dumps([c.__file__, str(c.app_script())]))"
    module, app = json.loads(_run([str(python), "-c", probe], cwd=elsewhere).stdout)
    assert Path(module) == source / "bnviz" / "cli.py"
    assert Path(app) == source / "app.py"                          # the checkout's app, not a copy
    assert not (site / "bnviz").exists()
    assert _run([str(python.parent / "bnviz"), "--version"], cwd=elsewhere).stdout.strip() == f"bnviz {VERSION}"
