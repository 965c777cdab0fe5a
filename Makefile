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
.PHONY: help install test test-fast lint format bench train eval predict sweep clean

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
	$(BIN)/python benchmarks/run_all.py $(ARGS)

clean: ## Remove caches and run outputs (keeps .venv and data)
	rm -rf .pytest_cache .ruff_cache outputs multirun
