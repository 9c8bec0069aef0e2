# coreai_opt — every entry point sets up what it needs first.
#   make test      system packages, .venv, the C++ library, Catch2 + sanitizer tests, the
#                  C++ bench harness on one tiny case file (a smoke run, no timing target),
#                  the nvcc compile check, ruff/clang-format checks and pytest
#   make test-gpu  on the GPU machine: build with its python3/torch and run pytest with CUDA
#   make bench     CPU benchmarks (Python and the C++ harness; never part of make test)
#   make demo      train two small models on scikit-learn's digits, quantize them, write
#                  docs/demo/demo_results.md and its charts
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BUILD_DIR := build/cmake
NPROC := $(shell nproc 2>/dev/null || echo 2)
TORCH_VERSION := 2.13.0
APT_PACKAGES := catch2 libfmt-dev libyaml-cpp-dev cmake ninja-build g++ clang-format
PY_BUILD_DEPS := "setuptools>=70" wheel ninja
PY_DEPS := "pydantic>=2" "pyyaml>=6" "tqdm>=4.60" "rich>=13" "pytest>=7" "hypothesis>=6" \
           expecttest numpy ruff "scikit-learn>=1.3" "safetensors>=0.4" "matplotlib>=3.7"
# The coreml extra (pyproject.toml): the finalize tests convert with coremltools.
PY_DEPS += "coremltools==9.0"
# The coreai extra (pyproject.toml): coreai-torch's torch.ops.coreai.* ops, which
# tests/ops/test_ops_coreai.py and the finalize tests compare ours with bit for bit (about
# 200 MB, nearly all coreai-core's wheel; a few seconds to install).
PY_DEPS += "coreai-core==1.0.0b3" "coreai-torch==0.4.3"
CUDA_SOURCES := $(wildcard csrc/cuda/*.cu)
NVCC ?= nvcc

.PHONY: test test-gpu bench demo build system-deps cpp-tests cpp-bench-smoke cuda-check lint pytest

system-deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq $(APT_PACKAGES); \
	fi

# The virtual environment: no system site-packages, torch pinned (a wider spec would pull a
# multi-GB CUDA build), and pinned again beside PY_DEPS so no dependency can move it
# (coreai-torch asks for torch>=2.8).
$(VENV)/.deps-stamp: Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(PY_BUILD_DEPS)
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q torch==$(TORCH_VERSION) $(PY_DEPS)
	touch $@

build: system-deps $(VENV)/.deps-stamp
	COREAI_BUILD_JOBS=$(NPROC) $(PIP) install -q --no-build-isolation --no-deps -e .

cpp-tests: build
	cmake --build $(BUILD_DIR) --target coreai_opt_format_tests coreai_opt_op_tests -j $(NPROC)
	$(BUILD_DIR)/coreai_opt_format_tests
	$(BUILD_DIR)/coreai_opt_op_tests

# The C++ benchmark harness on its tiny cases (well under a second: a smoke run, not a
# measurement); tests/test_cpp_bench.py checks its table and its case-file errors.
cpp-bench-smoke: build
	cmake --build $(BUILD_DIR) --target coreai_opt_bench -j $(NPROC)
	$(BUILD_DIR)/coreai_opt_bench --threads 2 benchmarks/cases/tiny.yaml

# CUDA sources hold only kernels and raw-pointer launchers, so they compile without a GPU.
cuda-check:
	@if [ -z "$(CUDA_SOURCES)" ]; then echo "cuda-check: csrc/cuda has no .cu files yet"; \
	else for f in $(CUDA_SOURCES); do \
	  echo "nvcc -c $$f"; \
	  $(NVCC) -c $$f -o /dev/null -std=c++17 -gencode arch=compute_90,code=sm_90 --fmad=false \
	    -Icsrc -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE; \
	done; fi

lint: $(VENV)/.deps-stamp
	$(VENV)/bin/ruff check coreai_opt tests benchmarks tools setup.py
	$(VENV)/bin/ruff format --check coreai_opt tests benchmarks tools setup.py
	clang-format --dry-run -Werror $$(find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu')

pytest: build
	$(PY) -m pytest -q -p no:cacheprovider

test: build cpp-tests cpp-bench-smoke cuda-check lint pytest

# GPU machine: its python3 is a virtual environment with a CUDA torch; build against it.
test-gpu:
	COREAI_BUILD_JOBS=$(NPROC) python3 -m pip install -q --no-build-isolation --no-deps -e .
	python3 -m pytest -q -p no:cacheprovider

# The C++ harness appends its table to RESULTS.md too, naming the commit it measured (marked
# "+ local changes" when csrc/ or coreai_opt/ differ from it, as ops_cpu.py does).
bench: build
	$(PY) benchmarks/ops_cpu.py
	cmake --build $(BUILD_DIR) --target coreai_opt_bench -j $(NPROC)
	commit="commit $$(git rev-parse --short HEAD)"; \
	if [ -n "$$(git status --porcelain -- csrc coreai_opt)" ]; then commit="$$commit + local changes"; fi; \
	$(BUILD_DIR)/coreai_opt_bench --threads 2 --results benchmarks/RESULTS.md --commit "$$commit" \
	  benchmarks/cases/*.yaml

# The demo (python -m coreai_opt.demo --help for its options): the results table on stdout,
# demo_results.md and the PNG charts in docs/demo/.
demo: build
	$(PY) -m coreai_opt.demo
