# Quick start: `make run` (set up + the gateway over emulated engines, a mixed coding load),
# `make test` (set up + tests, including the real llama.cpp engine).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STAMP_FULL := $(VENV)/.installed-full

.PHONY: setup run simulate test test-slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The tests also need the real llama.cpp engine and Ray. llama.cpp's server builds from source
# the first time (about 10 minutes on 2 cores); pip keeps the built wheel in its cache, so later
# set-ups reuse it.
$(STAMP_FULL): $(STAMP)
	@echo "installing llama-cpp-python[server] (first time: builds llama.cpp, ~10 min) and ray[serve]"
	$(BIN)/pip install --quiet -e '.[dev,llamacpp,ray]'
	touch $(STAMP_FULL)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/cato demo --rate 20 --duration 20

simulate: $(STAMP)
	$(BIN)/cato simulate --scenario paper --seeds 3 --json out/paper.json --plots out/plots

test: $(STAMP_FULL)
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m "llamacpp or ray"
	$(BIN)/mypy

test-slow: $(STAMP_FULL)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	bash benchmarks/run_all.sh

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache
