# Quick start: `make demo` (train the guide's ConvNet on every backend), `make test` (the suite).
# Each target creates its own virtual environment in .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: test demo lint bench venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml requirements/dev.txt
	$(PY) -m pip install --quiet -r requirements/dev.txt -e .
	touch $(STAMP)

DEMO_STAMP := $(VENV)/.installed-demo
$(DEMO_STAMP): $(STAMP) requirements/demo.txt
	$(PY) -m pip install --quiet -r requirements/demo.txt
	touch $(DEMO_STAMP)

venv: $(STAMP)

demo: $(DEMO_STAMP)
	$(PY) examples/demo.py $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check mithril tests benchmarks examples
	$(PY) -m pytest -n 2 tests

lint: $(STAMP)
	$(PY) -m ruff check mithril tests benchmarks examples

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
