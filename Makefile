# The two commands of the README: `make demo` and `make test`. Each creates .venv and installs
# everything from requirements.lock on first use (needs only python3 >= 3.11 and network access to PyPI).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Keras, Prefect and matplotlib write into $HOME on import; keep their files inside the work tree.
export KERAS_HOME ?= $(CURDIR)/.cache/keras
export MPLCONFIGDIR ?= $(CURDIR)/.cache/matplotlib
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install browser demo test lint lock clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.8
	$(VENV)/bin/uv pip sync --quiet -p $(PY) requirements.lock
	$(VENV)/bin/uv pip install --quiet -p $(PY) --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/drift-audit demo

# The suite on TEST_WORKERS processes (pytest-xdist; 0 runs it in this one). Each test file goes whole
# to one worker (files sharing a costly server go together: tests/conftest.py),
# so module fixtures (trained models, audited databases) and servers are built once, and files
# with a `slow` test are handed out first so the short ones fill the end.
TEST_WORKERS ?= 2
test: $(STAMP) browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# tests/test_report_browser.py renders report.html in headless Chromium. Install Debian's `chromium`
# (about 350 MB with its libraries; 23 s here, apt-get update included) when it is missing and we are
# root on a machine with apt-get; otherwise say why that test will skip. Never fails `make test`.
# The test reads the same variable: point both at another Chromium with DRIFT_AUDIT_CHROMIUM=/path.
export DRIFT_AUDIT_CHROMIUM ?= /usr/bin/chromium
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0
browser:
	@if [ -x "$(DRIFT_AUDIT_CHROMIUM)" ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: $(DRIFT_AUDIT_CHROMIUM) missing and no apt-get here: the headless-Chromium report test will skip"; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "browser: $(DRIFT_AUDIT_CHROMIUM) missing and not root (run 'sudo apt-get install chromium'): the headless-Chromium report test will skip"; \
	else \
	  echo "browser: installing Debian chromium with apt-get (once, under a minute)"; \
	  mkdir -p .cache; \
	  { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends chromium fonts-dejavu-core; } \
	    >.cache/browser-install.log 2>&1 \
	    || echo "browser: apt-get could not install chromium (see .cache/browser-install.log): the headless-Chromium report test will skip"; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Refresh the pinned environment after editing dependencies in pyproject.toml.
lock:
	$(VENV)/bin/uv pip compile --quiet pyproject.toml --extra dev -o requirements.lock

clean:
	rm -rf $(VENV) .cache demo-output
