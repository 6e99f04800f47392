# Two entry points for a fresh machine: `make demo` (train -> promote -> import -> serve) and
# `make test`. Both create .venv and install uv.lock into it when it is missing or stale.
PYTHON_BASE ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BENTOML := $(VENV)/bin/bentoml
STAMP := $(VENV)/.installed
PORT ?= 3000
HOST ?= 127.0.0.1
ENGINE ?= $(or $(CONTAINER_ENGINE),docker)

.PHONY: setup demo train import serve report test test-fast test-containers bench soak \
        bench-containers bench-sweep bench-batch build containerize rollout prometheus picture clean

# PYTHON_BASE creates .venv; it must be one of these Python versions (as requires-python says).
# PYTHON_PROBLEM is empty for a supported one, else one line saying what was found. It is worked
# out only when .venv is (re)built, and the probe runs on any Python (even 2.7) without a traceback.
SUPPORTED_PYTHONS ?= 3.11 3.12 3.13
comma := ,
PYTHON_PROBLEM = $(shell $(PYTHON_BASE) -c 'import sys; v = sys.version_info; \
  ok = "%d.%d" % v[:2] in sys.argv[1:]; \
  ok or sys.stdout.write("PYTHON_BASE=$(PYTHON_BASE) is Python %d.%d.%d at %s" % (v[0], v[1], v[2], sys.executable))' \
  $(SUPPORTED_PYTHONS) 2>/dev/null || echo 'PYTHON_BASE=$(PYTHON_BASE) cannot be run (not on PATH?)')
PYTHON_ADVICE = supported: $(subst $() ,$(comma) ,$(SUPPORTED_PYTHONS)); \
  choose one with: make PYTHON_BASE=python3.12 $(or $(MAKECMDGOALS),setup)
# "3.12" for the Python $(1), empty when it does not run. A .venv of another Python than
# PYTHON_BASE is recreated (--clear): `venv` over it would keep the old interpreter.
python_version = $(shell $(1) -c 'import sys; sys.stdout.write("%d.%d" % sys.version_info[:2])' 2>/dev/null)
VENV_CLEAR = $(if $(filter-out $(call python_version,$(PYTHON_BASE)),$(call python_version,$(PY))),--clear )

# uv installs every package at the version and sha256 uv.lock records (--locked: and refuses a
# uv.lock older than pyproject.toml); pip only bootstraps uv itself, pinned as in uv.lock.
UV_VERSION := $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' uv.lock)

$(STAMP): pyproject.toml uv.lock
	$(if $(PYTHON_PROBLEM),$(error $(PYTHON_PROBLEM); $(PYTHON_ADVICE)))
	$(PYTHON_BASE) -m venv $(VENV_CLEAR)$(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(VENV)/bin/uv sync --quiet --locked --extra dev --python $(PY)
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

# bench.run (iris, about 5 minutes), then bench.wide (the wide accounts table, three families,
# about 8 minutes), each printing its table; both run whatever the first one's result, and the
# exit code is the first non-zero one. Options: BENCH_ARGS="--duration 3 --rounds 1" for
# bench.run, WIDE_ARGS="--families random_forest --rounds 1" for bench.wide.
bench: setup
	$(PY) -m bench.run $(BENCH_ARGS); run=$$?; \
	  $(PY) -m bench.wide $(WIDE_ARGS); wide=$$?; \
	  exit $$(( run ? run : wide ))

# 60 s at concurrency 64 against `bentoml serve`; SOAK_ARGS="--duration 600" for longer.
soak: setup
	$(PY) -m bench.soak $(SOAK_ARGS)

build: setup
	$(BENTOML) build

# The image is tagged with the model it holds (v<registry version>-<run id>) and as latest
# (release/image.py: bentoml build + bentoml containerize).
containerize: setup
	$(PY) -m release.image --engine $(ENGINE)

# The current @production version onto the running balancer stack (docker-compose.yml +
# docker-compose.lb.yml), one replica at a time (release/rollout.py); ROLLOUT_ARGS="--dry-run",
# "--watch 60", ...
rollout: setup
	$(PY) scripts/rollout.py --engine $(ENGINE) $(ROLLOUT_ARGS)

# Debian's prometheus with deploy/prometheus's config and rules, scraping `make serve` (HOST:PORT);
# its UI and API on 127.0.0.1:9090, its data in .prometheus/. `make picture` draws the dashboard
# of the last MINUTES minutes from it into monitoring.png.
prometheus: setup
	$(PY) -m monitor.prometheus --target $(HOST):$(PORT)

MINUTES ?= 30
picture: setup
	$(PY) -m monitor.picture --minutes $(MINUTES) --output monitoring.png

test-containers: setup
	$(PY) -m pytest -m container

# A 24-point sweep of three families: sequential vs --jobs 2 vs a 2-worker local Dask cluster.
bench-sweep: setup
	$(PY) -m bench.sweep $(BENCH_ARGS)

# Batch scoring of 1,000,000 rows, three families: score.py (1 job, --jobs 2, Dask) vs mlflow models predict.
bench-batch: setup
	$(PY) -m bench.batch $(BENCH_ARGS)

bench-containers: setup
	bench/containers.sh

clean:
	rm -rf $(VENV) .venv-3.* mlflow.db mlartifacts .pytest_cache .hypothesis reports *.egg-info bench/results \
	  .prometheus monitoring.png
