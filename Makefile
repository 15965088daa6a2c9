# Relay's developer commands. Every target that needs the virtualenv installs it first; installing is
# idempotent and quick when nothing changed (a stamp file tracks pyproject.toml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install run test lint fmt bench proto clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv with Relay and every dev tool

run: install  ## start Relay on the embedded SQLite default (worker, maintenance)
	$(BIN)/relay up

test: install  ## run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install  ## ruff and mypy
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

fmt: install  ## format the code
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: install  ## run the benchmarks (not part of the tests)
	$(BIN)/python -m bench

proto: install  ## regenerate the gRPC stubs from src/relay/grpc/v1/relay.proto (checked in)
	$(BIN)/python -m relay.grpc.generate

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
