# provenance: `make run` starts the service on the embedded stack, `make test` runs the suite.
# Every target installs what it needs first; installs are idempotent (stamp files).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP  := $(VENV)/.installed
NPM_STAMP := node_modules/.installed

.PHONY: install run test lint bench contracts postgres-server clean

install: $(PY_STAMP) $(NPM_STAMP)

$(PY_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first and pinned, so nothing below can pull multi-GB CUDA wheels.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,postgres]'
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# PostgreSQL server binaries for the tests that run against a real PostgreSQL.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)

run: install
	$(BIN)/provenance serve

lint: install
	$(BIN)/ruff check .

test: install postgres-server lint
	$(BIN)/pytest

bench: install
	$(BIN)/python -m provenance.bench

contracts: $(NPM_STAMP)
	node contracts/compile.js

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
