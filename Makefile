# LegacyFlo — `make run` serves the portal, `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# npm's pst-extractor, the fourth PST reader of the tests (its lock file pins the version).
NODE_READER := tests/pst_extractor
NODE_STAMP  := $(NODE_READER)/node_modules/.installed

.PHONY: run test test-postgres bench bench-large lint install system-deps node-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Serve the portal at http://127.0.0.1:8000 with one RQ worker (Ctrl-C stops everything).
run: install
	$(BIN)/python -m legacyflo.devkeys var/dev.env
	set -a && . ./var/dev.env && set +a && $(BIN)/python manage.py devserver

## Install what the tests need (Debian packages when root, the npm PST reader) and run the suite.
test: install system-deps node-deps
	$(BIN)/pytest $(PYTEST_ARGS)

## The suite on PostgreSQL (DATABASE_URL defaults to the local server; PYTEST_ARGS=--db-only for the DB tests only).
test-postgres: install system-deps node-deps
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/legacyflo} $(BIN)/pytest $(PYTEST_ARGS)

system-deps:
	@sh scripts/system-deps.sh

$(NODE_STAMP): $(NODE_READER)/package-lock.json | system-deps
	npm ci --prefix $(NODE_READER) --no-audit --no-fund --loglevel=error
	touch $@

node-deps: $(NODE_STAMP)

## Benchmarks (minutes): ZIP and PST export against mbsync, Gmail API and Graph against the fakes.
bench: install system-deps
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

## The benchmarks plus the 10x mailbox (several minutes, ~12 GB of disk).
bench-large: install system-deps
	$(BIN)/python bench/run_all.py --large

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) staticfiles .pytest_cache $(NODE_READER)/node_modules
