# Two commands on a fresh machine:
#   make run    create .venv, install, fetch the data (offline DVC remote), dvc repro
#   make test   the test suite (fast; `make test-all` adds the slow end-to-end tests)
VENV ?= .venv
PYTHON ?= python3
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
# Keep every tool local and quiet: no telemetry, no analytics daemons, no writes outside the repo.
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export DVC_SITE_CACHE_DIR := $(CURDIR)/.cache/dvc-site
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run start-model test test-all lint clean-outputs prefect-server prefect-deploy mlflow-ui report ablations

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel first: with it present, the package's torch range installs nothing more.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

run: setup
	# the data and the published starting model, from the repository's offline DVC remote
	$(BIN)/dvc pull data.dvc start_model
	$(BIN)/dvc repro
	# the starting model against its RecA post-training, each difference with its 95% interval
	@cat reports/evaluate/comparison.md

test: setup
	$(BIN)/python -m pytest

test-all: setup
	$(BIN)/python -m pytest -m "slow or not slow"

lint: setup
	$(BIN)/ruff check src tests flows benchmarks

# Make the published starting model again (about 26 minutes on 2 cores): the frozen
# start_model stage, run once, frozen again and pushed to the offline remote.
start-model: setup
	$(BIN)/dvc pull data.dvc
	$(BIN)/dvc unfreeze start_model
	$(BIN)/dvc repro start_model; status=$$?; $(BIN)/dvc freeze start_model; exit $$status
	$(BIN)/dvc push start_model

clean-outputs:
	rm -rf data/curated data/degraded data/embeddings models metrics reports checkpoints

# Local services, bound to 127.0.0.1 (docs/tracking.md: "Orchestration: Prefect", "MLflow").
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000

prefect-server: setup
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

# Serves the scheduled deployment reca-pipeline/nightly against `make prefect-server`.
prefect-deploy: setup
	PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api $(BIN)/python flows/deploy.py $(DEPLOY_ARGS)

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

report: setup
	$(BIN)/reca report $(REPORT_ARGS)

ablations: setup
	bash scripts/ablations.sh $(ABLATIONS)
