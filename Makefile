# Two entry points, as README.md says: `make run` and `make test`. Both set up what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint system-deps clean reliability bench

run: $(VENV)/.installed
	$(PY) server.py

test: system-deps $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .

# Debian packages the tests start for real (redis-server, nginx, chromium); installed only if missing.
system-deps:
	@bash scripts/install-system-deps.sh

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed setup.cfg
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache

# The fault and fuzz figures of docs/reliability.md come from a real run of the suite, never by hand.
reliability: system-deps $(VENV)/.installed-test
	IM_WRITE_RELIABILITY_DOC=1 $(PY) -m pytest tests/test_fuzz.py tests/reliability

# The benchmark (~7.5 minutes on 2 cores): bench/results/REPORT.md and its plots. BENCH_ARGS=--quick for
# a one-minute smoke run; `$(PY) -m bench.run --help` lists every size.
bench: $(VENV)/.installed-bench
	$(PY) -m bench.run $(BENCH_ARGS)

$(VENV)/.installed-bench: $(VENV)/.installed setup.cfg
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@
