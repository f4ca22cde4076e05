# `make help` lists the targets. Every target creates .venv when it is missing.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
CONFIG ?= configs/digits.yaml
ARGS   ?=
PORT   ?= 5000
STUDY  ?= configs/studies/regularization.yaml
# Read from the config when a target needs them (its workdir, tracking URI and export root).
setting = $$($(BIN)/pipeline config get $(CONFIG) $(1))

.DEFAULT_GOAL := help
.PHONY: help venv train test test-fast tune serve retrain backtest ui study report baseline bench bench-scale bench-distribute bench-tune bench-serving bench-gpu preview lint clean

$(BIN)/pipeline: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,team,beam]'
	touch $@

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

venv: $(BIN)/pipeline ## create .venv and install the project with its dev tools

train: venv ## train, track and export an experiment (CONFIG=configs/digits.yaml, ARGS="train.epochs=3")
	$(BIN)/pipeline train $(CONFIG) $(ARGS)

test: venv ## run the whole test suite (everything but GPU tests)
	$(BIN)/python -m pytest $(ARGS)

test-fast: venv ## the inner loop: the suite without slow (server, multi-process) tests
	$(BIN)/python -m pytest -m 'not slow' $(ARGS)

tune: venv ## search hyperparameters with KerasTuner (CONFIG=configs/digits.yaml, ARGS="--workers 2")
	$(BIN)/pipeline tune $(CONFIG) $(ARGS)

serve: venv ## serve the config's export root over TF Serving's REST API on 127.0.0.1:8501 (ARGS="--port 8600")
	$(BIN)/pipeline serve --root $(call setting,export.root) $(ARGS)

retrain: venv ## the nightly job: check data, train a challenger, promote it only if better (exit 0 promoted or kept)
	$(BIN)/pipeline retrain $(CONFIG) $(ARGS)

ui: venv ## browse the config's runs in the MLflow UI on http://127.0.0.1:5000 (PORT=5001 for another port)
	$(BIN)/pipeline ui $(CONFIG) --port $(PORT) $(ARGS)

backtest: venv ## forecasting: walk-forward backtest, a run per fold, pooled figures (CONFIG=configs/electricity.yaml)
	$(BIN)/pipeline backtest $(CONFIG) $(ARGS)

study: venv ## variants of a config side by side (STUDY=configs/studies/regularization.yaml)
	$(BIN)/pipeline study $(STUDY) $(ARGS)

report: venv ## an HTML report of the config's experiment (ARGS=RUN_ID for one run)
	$(BIN)/pipeline report --workdir $(call setting,workdir) $(if $(ARGS),$(ARGS),--experiment $(call setting,tracking.experiment))

baseline: venv ## each experiment beside classical baselines on the same split (ARGS="ames" for one)
	$(BIN)/python bench/baseline.py $(ARGS)

bench: venv ## performance figures, each a ratio measured side by side (bench/results/perf.md; bench/README.md)
	$(BIN)/python bench/perf.py $(ARGS)

bench-scale: venv ## preparation, training, evaluation and export at 10k, 100k, 1M rows (ARGS=--large adds 10M)
	$(BIN)/python bench/scale.py $(ARGS)

bench-distribute: venv ## strategies side by side and the cost of a kill-and-resume
	$(BIN)/python bench/distribute.py $(ARGS)

bench-tune: venv ## random vs Bayesian vs Hyperband at one budget; memory and overhead per trial
	$(BIN)/python bench/tune.py $(ARGS)

bench-serving: venv ## HTTP latency and throughput against the direct call; a hot swap under load
	$(BIN)/python bench/serving.py $(ARGS)

bench-gpu: venv ## on a GPU machine: mixed precision, XLA, augmentation on the device, larger batches
	$(BIN)/python bench/gpu.py $(ARGS)

preview: venv ## write a PNG grid of the configured augmentations
	$(BIN)/pipeline augment-preview $(CONFIG) $(ARGS)

lint: venv ## ruff
	$(BIN)/ruff check .

clean: ## delete the work folder (MLflow store, TFDS data, checkpoints, exports)
	rm -rf work
