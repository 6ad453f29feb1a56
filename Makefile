# Two entry points do all set-up on a fresh machine (each creates .venv on first use):
#   make demo   runs the pipeline end to end on the built-in offline default
#   make test   ruff, mypy, the import contracts and the fast test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/demo

.PHONY: setup demo test test-slow clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: a looser requirement makes pip pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/kdcompress run --teacher me5-small --device cpu --backend onnxruntime --budget quick --output $(RUN_DIR)

test: $(STAMP)
	$(BIN)/ruff check kdcompress tests benchmarks
	$(BIN)/ruff format --check kdcompress tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
