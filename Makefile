# ragkb: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest bench bench-ingest bench-query clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned to the CPU build: an unpinned torch pulls a multi-GB CUDA wheel.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/ragkb ingest data/ --collection demo --exclude README.md

test: install lint typecheck pytest

lint: install
	$(BIN)/ruff check ingest server eval tests
	$(BIN)/ruff format --check ingest server eval tests

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -q

bench-ingest: install
	$(BIN)/python -m eval.bench_ingest

bench: bench-ingest

clean:
	rm -rf .ragkb .pytest_cache .mypy_cache .ruff_cache
