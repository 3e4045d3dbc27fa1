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

.PHONY: install demo test lint lock clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.8
	$(VENV)/bin/uv pip sync --quiet -p $(PY) requirements.lock
	$(VENV)/bin/uv pip install --quiet -p $(PY) --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/drift-audit demo

test: $(STAMP)
	$(PY) -m pytest

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
