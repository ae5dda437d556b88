# Two commands for a new user: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed

.PHONY: run test bench chromium clean

# The runtime pins (requirements.txt, which pyproject.toml reads), then bnviz itself as an editable
# install: the `bnviz` command, and `import bnviz` from any folder. Built without isolation, with
# the setuptools of requirements-build.txt: nothing to download once the pins are installed.
# The stamps make a repeated `make run` / `make test` start at once.
$(RUNTIME_STAMP): requirements.txt requirements-build.txt pyproject.toml bnviz/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt -r requirements-build.txt
	$(PIP) --no-build-isolation --no-deps -e .
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

run: $(RUNTIME_STAMP)
	$(BIN)/bnviz app --address 127.0.0.1

# PNG export (kaleido) and the browser tests need Debian's Chromium; nothing downloads a browser.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo "Chromium is missing. Install it with: sudo apt-get install -y chromium (Debian/Ubuntu)"; exit 1; \
	fi

test: $(DEV_STAMP) chromium
	$(BIN)/python -m pytest

bench: $(DEV_STAMP) chromium
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
