# Ray Estate — the two promised commands are `make up` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
export RAY_AUTH_MODE ?= token

.PHONY: up down status test test-fast lint bench install install-dev system-deps manifests clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "==> installing Ray Estate and its dependencies into $(VENV) (first run takes a few minutes)"
	$(BIN)/pip install --progress-bar on -e .
	@touch $@

$(DEV_STAMP): pyproject.toml $(STAMP)
	@echo "==> installing test dependencies"
	$(BIN)/pip install --progress-bar on -e ".[dev]"
	@touch $@

install: $(STAMP)
install-dev: $(DEV_STAMP)

## Start the whole local stack (Ray head, Prometheus, MLflow, data API, pipeline run, Serve, UI) and print its URLs.
## Installs Debian's prometheus first where it is missing (as root; otherwise fails naming it).
up: $(STAMP)
	@bash scripts/system-deps.sh up
	$(BIN)/rayestate up

## Stop exactly what `make up` started.
down:
	@if [ -x $(BIN)/rayestate ]; then $(BIN)/rayestate down; else echo "nothing to stop (no $(VENV))"; fi

status: $(STAMP)
	$(BIN)/rayestate status

## Debian packages the stack (prometheus), the browser test and the benchmarks use (needs root; skipped otherwise).
system-deps:
	@bash scripts/system-deps.sh

## Install everything and run the whole test suite (what CI runs).
test: $(DEV_STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

## The unit tier only (tests/unit): no servers, no ../shared, a minute or two.
test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest tests/unit

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(DEV_STAMP)
	@for b in benchmarks/*_bench.py; do echo "== $$b"; $(BIN)/python $$b; done

## Regenerate and validate the Kubernetes manifests offline (kuberay/, argocd/).
manifests: $(DEV_STAMP)
	$(BIN)/python scripts/sync_serve_config.py
	$(BIN)/python scripts/k8s_manifests.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
