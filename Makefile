# provenance: `make run` starts the service on the embedded stack, `make test` runs the suite.
# Every target installs what it needs first; installs are idempotent (stamp files).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Three stamps: what running needs (make run), the test tools (make test), the benchmark tools (make bench*).
PY_STAMP    := $(VENV)/.installed-run
TEST_STAMP  := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench
NPM_STAMP   := node_modules/.installed

.PHONY: install install-test install-bench openssl run test test-c2pa-rs lint bench bench-chain bench-gen bench-fingerprint bench-robustness bench-load bench-memory bench-datasets bench-training contracts docs test-servers clean

install: $(PY_STAMP) $(NPM_STAMP)
install-test: install $(TEST_STAMP)
install-bench: install $(BENCH_STAMP)

# A line per step, and pip's own progress (no --quiet on the installs that download).
$(PY_STAMP): pyproject.toml
	@echo "==> [1/3] Python virtual environment in $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "==> [2/3] CPU torch 2.13.0 (pinned first, so nothing below can pull multi-GB CUDA wheels)"
	$(BIN)/pip install --progress-bar on torch==2.13.0
	@echo "==> [3/3] the service and what it needs to run (no test or benchmark tools)"
	$(BIN)/pip install --progress-bar on -e '.[postgres]'
	touch $@

$(TEST_STAMP): $(PY_STAMP)
	@echo "==> test tools (the 'test' extra: pytest, ruff, mypy, playwright, schemathesis, validators, mkdocs)"
	$(BIN)/pip install --progress-bar on -e '.[postgres,test]'
	touch $@

$(BENCH_STAMP): $(PY_STAMP)
	@echo "==> benchmark tools (the 'bench' extra: faiss-cpu, onnxruntime, scikit-image)"
	$(BIN)/pip install --progress-bar on -e '.[postgres,bench]'
	touch $@

$(NPM_STAMP): package.json package-lock.json
	@echo "==> node packages (anvil, solc, the c2pa reader)"
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Servers the tests start on 127.0.0.1: PostgreSQL (database tests) and Redis (Celery workers);
# openssl answers the local RFC 3161 time-stamp authority (provenance/manifests/tsa.py); Debian's chromium is the
# browser the web interface tests drive with Playwright (tests/e2e/test_web_ui.py).
test-servers:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v redis-server >/dev/null || ! command -v openssl >/dev/null || ! test -x /usr/bin/chromium; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server openssl chromium >/dev/null; \
	fi

# The embedded time-stamp authority answers with `openssl ts`.
openssl:
	@command -v openssl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }

run: install openssl
	@echo "==> starting the service (Ctrl-C stops it); it prints the web page's URL, then the API docs'"
	$(BIN)/provenance serve

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/mypy

# Test files run on two processes (pytest-xdist; each file stays on one, so its fixtures are shared); the
# schemathesis run goes on its own, since xdist loses schemathesis' generated cases.
PYTEST_WORKERS ?= 2
test: install-test test-servers lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --ignore=tests/e2e/test_openapi_fuzz.py --ignore=tests/integration/test_c2pa_fixtures.py
	$(BIN)/pytest tests/e2e/test_openapi_fuzz.py

# c2pa-rs's own test files through the service (tests/integration/test_c2pa_fixtures.py). This workplace lets no session commit
# files fetched from another repository, so they are read from ../shared/c2pa-rs (or PROVENANCE_C2PA_RS_FIXTURES),
# laid out as tests/fixtures/c2pa-rs/README.md says; the target fails when they are missing.
test-c2pa-rs: install-test test-servers
	$(BIN)/pytest tests/integration/test_c2pa_fixtures.py

bench: install-bench
	$(BIN)/python -m benchmarks.bench

bench-chain: install-bench
	$(BIN)/python -m benchmarks.chain

bench-gen: install-bench
	$(BIN)/python -m generator.bench

bench-fingerprint: install-bench
	$(BIN)/python -m benchmarks.fingerprint --recall

bench-robustness: install-bench
	$(BIN)/python -m benchmarks.robustness

# The service under load: certify/verify per second at 1, 4 and 16 clients, registration lag, RSS.
bench-load: install-bench openssl
	$(BIN)/python -m benchmarks.load

# Memory: four concurrent 39.9 MP uploads against a real server (peak RSS), and pathological uploads refused.
bench-memory: install-bench openssl
	$(BIN)/python -m benchmarks.memory

# Datasets: hashing and registering 1,000, 5,000 and 10,000 small PNGs, and the root on chain.
bench-datasets: install-bench
	$(BIN)/python -m benchmarks.datasets

# LoRA training steps per second: the tiny pipeline on the CPU (ARGS=--sd15 adds SD 1.5 at 512 on CUDA).
bench-training: install-bench
	$(BIN)/python -m benchmarks.training $(ARGS)

# The documentation site (mkdocs.yml: Material, no font or script from another host) into site/, strictly: a broken
# link or anchor fails it. `make test` builds it too (tests/e2e/test_docs_site.py).
docs: install-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

contracts: $(NPM_STAMP)
	node contracts/compile.js

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
