# The two commands: `make run` and `make test`. Each sets itself up from nothing but Python.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: run test lint unit bench package clean

$(READY): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(READY)

run: $(READY)
	$(BIN)/python -m infra.local

lint: $(READY)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict chalicelib/domain
	$(BIN)/mypy

test: lint $(READY)
	$(BIN)/pytest

bench: $(READY)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache .hypothesis
