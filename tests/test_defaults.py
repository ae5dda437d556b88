"""Safe defaults: out of the box the app is reachable from this machine only, keeps Streamlit's
XSRF protection, sends no usage statistics, and the README says how to serve it on purpose."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _streamlit_config() -> dict:
    with open(ROOT / ".streamlit" / "config.toml", "rb") as f:
        return tomllib.load(f)


def test_server_binds_loopback_with_xsrf_protection():
    server = _streamlit_config()["server"]
    assert server["address"] == "127.0.0.1"
    assert server["enableXsrfProtection"] is True
    assert server.get("headless") is True


def test_no_usage_statistics_leave_the_machine():
    assert _streamlit_config()["browser"]["gatherUsageStats"] is False


def test_make_run_binds_loopback():
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^run:.*\n((?:\t.*\n?)+)", makefile, re.MULTILINE)
    assert match, "the Makefile has no run target"
    recipe = match.group(1)
    assert "bnviz app --address 127.0.0.1" in recipe     # bnviz app passes it on as --server.address (test_cli)
    assert "0.0.0.0" not in recipe


def test_readme_explains_serving_on_a_network():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Serving on a network\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert match, "README.md needs a '## Serving on a network' section"
    section = match.group(1)
    assert "127.0.0.1" in section and "--server.address" in section
