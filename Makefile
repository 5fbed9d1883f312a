# Quick start: `make run` (set up + simulate the paper scenario), `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/cato simulate --scenario paper --seeds 3 --json out/paper.json --plots out/plots

test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/mypy

bench: $(STAMP)
	bash benchmarks/run_all.sh

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache
