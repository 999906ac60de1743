# `make repro` runs the pipeline on the embedded default (synthetic) competition; `make test` runs the tests.
# Both create .venv from requirements.txt first when it is missing or older than requirements.txt.
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
FILES ?=
MESSAGE ?=

.PHONY: setup repro test test-fast lint bench summary submit leaderboard experiments plots kaggle-local

$(STAMP): requirements.txt
	@echo "setting up $(VENV): installing requirements.txt (torch, timm, dvc, ...): a few minutes, once"
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check --progress-bar off -r requirements.txt \
		| grep -E --line-buffered '^(Collecting|Processing|Successfully installed)' | sed -u 's/^/  /' || true
	$(BIN)/python -c "import torch, timm, albumentations, dvc, dvclive" \
		|| { echo "$(VENV) is incomplete: see the pip output above"; exit 1; }
	touch $(STAMP)
	@echo "$(VENV) is ready"

setup: $(STAMP)

# DVC's last line is its `dvc push` hint (there is no remote): the summary after it says what the run produced.
repro: $(STAMP)
	PATH="$(BIN):$$PATH" dvc repro
	@echo
	@$(BIN)/python -m pipeline summary

summary: $(STAMP)
	@$(BIN)/python -m pipeline summary

test: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# make submit [FILES="submissions/verification.csv"] [MESSAGE="what changed"]
submit: $(STAMP)
	$(BIN)/python -m pipeline submit $(FILES) $(if $(MESSAGE),-m "$(MESSAGE)")

leaderboard: $(STAMP)
	$(BIN)/python -m pipeline leaderboard

experiments: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pipeline experiments

plots: $(STAMP)
	PATH="$(BIN):$$PATH" dvc plots show

# A local Kaggle serving this project's own competition (data/raw, data/solution) until Ctrl-C.
kaggle-local: $(STAMP)
	$(BIN)/python -m pipeline.testing.fake_kaggle --project . --lifetime 0

bench: $(STAMP)
	$(BIN)/python -m pipeline.bench

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
