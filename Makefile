# Two commands set everything up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
HTTP_PORT ?= 8000
MANAGEMENT_TOKEN ?= change-me

.PHONY: serve test lint typecheck unit e2e bench examples grpc-stubs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The runtime install: pinnace with scikit-learn (the example repository has a joblib model).
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[sklearn]"
	touch $@

# Every extra (torch CPU pinned, tensorflow-cpu, ...) plus the test and lint tools.
$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[dev]"
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(VENV)/bin/pinnace serve examples/models --http-port $(HTTP_PORT) \
		--management-token $(MANAGEMENT_TOKEN) --log-format text

test: $(VENV)/.installed-dev lint typecheck
	$(VENV)/bin/pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests bench examples

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

unit: $(VENV)/.installed-dev
	$(VENV)/bin/pytest tests/unit

e2e: $(VENV)/.installed-dev
	$(VENV)/bin/pytest tests/e2e

# The benchmark suite (about 6 minutes; needs wrk: apt-get install -y wrk). Writes docs/benchmarks.md.
bench: $(VENV)/.installed-dev
	$(PY) -m bench.run

examples: $(VENV)/.installed-dev
	$(PY) examples/make_models.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info

grpc-stubs: $(VENV)/.installed-dev
	PYTHON=$(PY) bash scripts/gen_grpc.sh
