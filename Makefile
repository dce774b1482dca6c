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

test: lint package $(READY)
	$(BIN)/pytest

# The prod stage as a SAM template with infra/template.yaml merged in, linted. The merge
# template is YAML, so chalice writes build/sam.yaml. Chalice caches one ~26 MB zip per
# source state in .chalice/deployments (gitignored); keep only the newest.
package: $(READY)
	rm -rf build
	$(BIN)/chalice package --stage prod --merge-template infra/template.yaml build/
	ls -t .chalice/deployments/*.zip | tail -n +2 | xargs -r rm -f
	$(BIN)/cfn-lint build/sam.yaml

bench: $(READY)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache .hypothesis
