# Two entry points for a fresh machine: `make demo` (train -> promote -> import -> serve) and
# `make test`. Both create .venv and install from pyproject.toml when it is missing or stale.
PYTHON_BASE ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BENTOML := $(VENV)/bin/bentoml
STAMP := $(VENV)/.installed
PORT ?= 3000
HOST ?= 127.0.0.1
ENGINE ?= $(or $(CONTAINER_ENGINE),docker)

.PHONY: setup demo train import serve report test test-fast test-containers bench soak \
        bench-containers build containerize clean

$(STAMP): pyproject.toml
	@$(PYTHON_BASE) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	$(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

train: setup
	$(PY) -m training.experiments --promote

import: setup
	$(PY) scripts/import_production.py

serve: setup
	$(BENTOML) serve --host $(HOST) --port $(PORT)

demo: train import serve

report: setup
	$(PY) -m training.report

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "unit or integration"

# About 5 minutes; options after BENCH_ARGS=, e.g. BENCH_ARGS="--duration 3 --rounds 1".
bench: setup
	$(PY) -m bench.run $(BENCH_ARGS)

# 60 s at concurrency 64 against `bentoml serve`; SOAK_ARGS="--duration 600" for longer.
soak: setup
	$(PY) -m bench.soak $(SOAK_ARGS)

build: setup
	$(BENTOML) build

containerize: build
	$(BENTOML) containerize classification_service:latest --backend $(ENGINE) -t classification_service:latest

test-containers: setup
	$(PY) -m pytest -m container

bench-containers: setup
	bench/containers.sh

clean:
	rm -rf $(VENV) mlflow.db mlartifacts .pytest_cache
