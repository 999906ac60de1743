# `make repro` runs the pipeline on the embedded default (synthetic) competition; `make test` runs the tests.
# Both create .venv from requirements.txt first when it is missing or older than requirements.txt; `make test` also
# installs Debian's chromium (`make browser`) for the plots page test.
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
FILES ?=
MESSAGE ?=
SCALE_ARGS ?=
GPU_CHECK_ARGS ?=

.PHONY: setup browser repro test test-fast lint bench summary submit leaderboard experiments plots kaggle-local scale gpu-check

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

# Debian's chromium, for the test that opens the `dvc plots show` page offline (tests/test_plots_page.py; Playwright
# drives it, no browser download). apt-get needs root: when the install fails, its output stays in .venv/browser.log
# and that test fails quoting it (it never skips).
CHROMIUM := /usr/bin/chromium
browser: $(STAMP)
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the plots page test (apt-get, once)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
			> $(VENV)/browser.log 2>&1 && rm -f $(VENV)/browser.log \
		|| echo "could not install chromium (see $(VENV)/browser.log): tests/test_plots_page.py will fail"; }

# DVC's last line is its `dvc push` hint (there is no remote): the summary after it says what the run produced.
repro: $(STAMP)
	PATH="$(BIN):$$PATH" dvc repro
	@echo
	@$(BIN)/python -m pipeline summary

summary: $(STAMP)
	@$(BIN)/python -m pipeline summary

# The suite must stay well under 15 min on 2 cores: TEST_WORKERS pytest-xdist workers (each file on one worker,
# tests/conftest.py), one torch thread each so that two workers' training never fights over the cores (busy-waiting
# OpenMP threads of two processes slowed each other several times over); --durations names the slowest tests.
TEST_WORKERS ?= 2
PYTEST := PATH="$(BIN):$$PATH" OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS)
test: $(STAMP) browser
	$(PYTEST) --durations=15 $(PYTEST_ARGS)

test-fast: $(STAMP) browser
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# make submit [FILES="submissions/verification.csv"] [MESSAGE="what changed"]
submit: $(STAMP)
	$(BIN)/python -m pipeline submit $(FILES) $(if $(MESSAGE),-m "$(MESSAGE)")

leaderboard: $(STAMP)
	$(BIN)/python -m pipeline leaderboard

experiments: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pipeline experiments

# The page draws offline (.dvc/config: plots.html_template); `python -m pipeline.plots_page check` opens it in
# headless Chromium and says whether every image and chart rendered.
plots: $(STAMP)
	PATH="$(BIN):$$PATH" dvc plots show

# A local Kaggle serving this project's own competition (data/raw, data/solution) until Ctrl-C.
kaggle-local: $(STAMP)
	$(BIN)/python -m pipeline.testing.fake_kaggle --project . --lifetime 0

bench: $(STAMP)
	$(BIN)/python -m pipeline.bench

# make scale [SCALE_ARGS="--train-steps 3000"]: the whole dvc repro at the real competition's size, in a working copy
# beside the project (../<project>-scale), with wall time, peak memory and disk per stage (docs/SCALE.md).
scale: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pipeline scale $(SCALE_ARGS)

# make gpu-check: on a CUDA machine, the competition recipe's training and embedding settings in a few minutes;
# exits 1 when CUDA is absent (GPU_CHECK_ARGS="--device cpu --tiny" rehearses it on a CPU; docs/SCALE.md).
gpu-check: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pipeline.gpu_check $(GPU_CHECK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
