# reddb-engine: every target creates .venv and installs what it needs when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEPS_STAMP := $(VENV)/.deps-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
BUILD_STAMP := $(VENV)/.build-stamp
EXT_SRC := $(wildcard ext/*.pyx ext/*.pxd) setup.py pyproject.toml
BENCH_ARGS ?=

.PHONY: all setup build run test lint bench bench-check clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip "setuptools>=77" wheel

$(DEPS_STAMP): pyproject.toml | $(PY)
	$(PIP) install -q "Cython>=3.1,<4" "numpy>=1.26" "orjson>=3.9" "lmdb>=1.4" "httpx>=0.27" \
		"uvicorn>=0.29" "httptools>=0.6" "uvloop>=0.19" \
		"pytest>=8" "pytest-benchmark>=4" "hypothesis>=6" ruff mypy cython-lint
	touch $@

setup: $(DEPS_STAMP)

$(BUILD_STAMP): $(DEPS_STAMP) $(EXT_SRC)
	@command -v cc >/dev/null && command -v c++ >/dev/null || { \
		echo "installing the C and C++ compilers (Debian: gcc, g++)"; \
		apt-get update -q && apt-get install -y -q gcc g++; }
	$(PIP) install -q --no-build-isolation --no-deps -e .
	$(PY) setup.py -q build_ext --inplace
	touch $@

build: $(BUILD_STAMP)

run: $(BUILD_STAMP)
	$(PY) -m engine --path .engine-demo demo --fresh

lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check engine tests benchmarks scripts setup.py
	$(VENV)/bin/ruff format --check engine tests benchmarks scripts setup.py
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/cython-lint --max-line-length 110 ext
	$(VENV)/bin/mypy engine

test: $(BUILD_STAMP) lint
	$(PY) -m pytest -q tests

$(BENCH_STAMP): $(DEPS_STAMP)
	$(PIP) install -q cachetools cachebox lru-dict polars duckdb faiss-cpu simsimd usearch
	touch $@

bench: $(BUILD_STAMP) $(BENCH_STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-autosave \
		--benchmark-json=.benchmarks/latest.json $(BENCH_ARGS)
	$(PY) scripts/bench_report.py .benchmarks/latest.json BENCHMARKS.md

bench-check: $(BUILD_STAMP) $(BENCH_STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-compare \
		--benchmark-compare-fail=mean:10% $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info engine/*.so ext/*.c ext/*.cpp ext/*.html .pytest_cache .mypy_cache .ruff_cache
	rm -f $(BUILD_STAMP)
