# One entry point for people and CI. `make demo` installs and runs the main job; `make test` installs and tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= demo

# No telemetry from any tool, even before cordwatch's own runtime settings apply.
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export YOLO_OFFLINE := 1

.PHONY: install demo test test-fast lint clean repro

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed  ## create .venv and install cordwatch with its dev tools

demo: install  ## SYNTHETIC cohort -> retrain (ingest .. register) -> predict (quick, xai) -> monitor a drifted stream
	$(BIN)/cordwatch demo --profile $(PROFILE)

test: install  ## lint, then the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

test-fast: install  ## the unit tier only (tests/unit, slow tests deselected): under a minute
	$(BIN)/python -m pytest tests/unit -m "not slow" -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:  ## remove generated data, reports and local state (not .venv)
	rm -rf data reports runs models mlruns mlflow.db .cordwatch

repro: install  ## run the DVC pipeline (dvc repro) with the project's environment on PATH
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
