# Two commands for a new user: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed

.PHONY: run test bench chromium clean

$(RUNTIME_STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -r requirements.txt
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(BIN)/pip install --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(RUNTIME_STAMP)
	$(BIN)/streamlit run app.py --server.address 127.0.0.1

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
	rm -rf $(VENV) .pytest_cache
