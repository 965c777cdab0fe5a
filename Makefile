# nrknet: every target that needs Python bootstraps .venv when it is missing or older than pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXP ?= quickstart
STUDY ?= table3_rkr
DATA ?= synthetic
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint format bench train eval predict demo sweep studies clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install nrknet with its dev tools

test: $(STAMP) ## Run the whole test suite (slow tests included)
	$(BIN)/python -m pytest -q $(ARGS)

test-fast: $(STAMP) ## Run the tests not marked slow
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP) ## Lint with ruff
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/ruff format --check src tests benchmarks experiments

format: $(STAMP) ## Format and fix with ruff
	$(BIN)/ruff check --fix src tests benchmarks experiments
	$(BIN)/ruff format src tests benchmarks experiments

bench: $(STAMP) ## Run the benchmarks (prints tables, writes benchmarks/results/*.json)
	$(BIN)/python -m benchmarks.run_all $(ARGS)

train: $(STAMP) ## Train: make train [EXP=quickstart] [ARGS="hydra overrides"]
	$(BIN)/nrknet-train experiment=$(EXP) $(ARGS)

eval: $(STAMP) ## Score a checkpoint: make eval CKPT=path.ckpt [DATA=synthetic|dpdd|lfdof|...] [ARGS=...]
	@if [ -z "$(CKPT)" ]; then echo "usage: make eval CKPT=path/to/checkpoint.ckpt [DATA=dpdd] [ARGS='split=val ...']" >&2; exit 2; fi
	$(BIN)/nrknet-eval ckpt_path=$(CKPT) data=$(DATA) $(ARGS)

predict: $(STAMP) ## Deblur photos: make predict IN=photos/ OUT=deblurred/ [CKPT=path.ckpt or name; default: the bundled model] [ARGS=...]
	@if [ -z "$(IN)" ] || [ -z "$(OUT)" ]; then echo "usage: make predict IN=photos/ OUT=out/ [CKPT=model.ckpt] [ARGS='--tile 512']" >&2; exit 2; fi
	$(BIN)/nrknet-predict "$(IN)" --out "$(OUT)" $(if $(CKPT),--ckpt "$(CKPT)") $(ARGS)

demo: $(STAMP) ## Web demo on http://127.0.0.1:7860: make demo [CKPT=path.ckpt or name] [ARGS="--ckpt b.ckpt --port 7860"]
	$(BIN)/nrknet-demo $(if $(CKPT),--ckpt "$(CKPT)") $(ARGS)

# expanded once (:=), so the sweep and its collection name the same folder; the process id keeps
# two sweeps started in the same second apart
ifeq ($(origin SWEEP_DIR), undefined)
SWEEP_DIR := logs/sweeps/$(STUDY)/$(shell date +%Y-%m-%d_%H-%M-%S_$$$$)
endif
JOBS ?= 1
SEEDS ?=
SCALE ?=
STUDIES ?= table3_rkr table4_pipeline table5_losses atoms_J
sweep: $(STAMP) ## Run a paper study and collect its table: make sweep STUDY=table3_rkr [SCALE=cpu] [JOBS=2] [SEEDS=0,1,2] [ARGS=...]
ifeq ($(filter-out gpu,$(SCALE)),)
	@overrides=$$($(BIN)/python -m experiments.study $(STUDY)) || exit 2; \
	launcher=$$([ "$(JOBS)" = 1 ] || echo "hydra/launcher=parallel hydra.launcher.n_jobs=$(JOBS)"); \
	seeds=$$([ -z "$(SEEDS)" ] || echo "seed=$(SEEDS)"); \
	set -x; $(BIN)/nrknet-train -m $$overrides $$seeds $$launcher hydra.sweep.dir=$(SWEEP_DIR) $(ARGS)
	$(BIN)/python -m experiments.collect --study $(STUDY) --runs $(SWEEP_DIR)
else
	$(BIN)/python -m experiments.runs $(STUDY) --scale $(SCALE) $(if $(SEEDS),--seeds $(SEEDS)) --jobs $(JOBS) -- $(ARGS)
	$(BIN)/python -m experiments.collect --study $(STUDY) --scale $(SCALE) -- $(ARGS)
endif

studies: $(STAMP) ## Run every paper study at a scale, shared runs once: make studies [SCALE=cpu] [JOBS=2] [SEEDS=0,1,2]
	$(BIN)/python -m experiments.runs $(STUDIES) --scale $(or $(SCALE),cpu) $(if $(SEEDS),--seeds $(SEEDS)) --jobs $(JOBS) -- $(ARGS)
	for study in $(STUDIES); do $(BIN)/python -m experiments.collect --study $$study --scale $(or $(SCALE),cpu) -- $(ARGS) || exit 1; done

clean: ## Remove caches and run outputs (keeps .venv and data)
	rm -rf .pytest_cache .ruff_cache outputs multirun
