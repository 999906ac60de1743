# `make repro` runs the pipeline on the embedded default (synthetic) competition; `make test` runs the tests.
# Both create .venv from requirements.txt first when it is missing or older than requirements.txt.
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup repro test test-fast lint bench clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)

repro: $(STAMP)
	PATH="$(BIN):$$PATH" dvc repro

test: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pipeline.bench

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
