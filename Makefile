# Two entry points for a newcomer: `make demo` and `make test`. Each sets up its own virtual
# environment (.venv) from pyproject.toml first.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# amqtt (the in-process broker used when Mosquitto is missing) goes in without its dependencies:
# it asks for typer>=0.24, which only its own CLI scripts use, and flwr needs typer<0.21.
AMQTT := amqtt==0.12.1

.PHONY: demo test check unit integration schemas clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e ".[demo]"
	$(PIP) install --quiet --no-deps $(AMQTT)
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e ".[all,dev]"
	$(PIP) install --quiet --no-deps $(AMQTT)
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed  ## set up and run the demo on embedded defaults
	$(BIN)/edgefleet demo $(ARGS)

check: $(VENV)/.dev-installed  ## lint, format, types, import contracts, schemas
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/edgefleet protocol schemas --check

# aeon's bundled KDD-TSAD_135 series, which the anomaly_kdd135 tests score, is read through an environment of
# its own (aeon's numba pin keeps numpy below 2.4): models/environments.py.
.venv-aeon/.installed: models/environments.py | $(VENV)/.dev-installed
	$(BIN)/python -m models.environments aeon
	touch $@

test: check .venv-aeon/.installed  ## set up and run every check and test
	@command -v mosquitto >/dev/null || echo "note: mosquitto is not on PATH; integration tests will be skipped (apt-get install mosquitto)"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(VENV)/.dev-installed
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

schemas: $(VENV)/.dev-installed
	$(BIN)/edgefleet protocol schemas

clean:
	rm -rf $(VENV) .venv-aeon var .pytest_cache .mypy_cache .ruff_cache
