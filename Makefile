# Quick start: `make demo` (train the guide's ConvNet on every backend), `make test` (the suite).
# Each target creates its own virtual environment in .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: test demo lint bench venv clean docs mutate test-fresh

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml requirements/dev.txt
	$(PY) -m pip install --quiet -r requirements/dev.txt -e .
	$(PY) -m pip install --quiet --no-deps torchvision==0.28.0
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

# Targeted mutation testing (tools/mutate.py): each mutant of mithril/ on a temporary copy, its
# tests run with fresh hypothesis seeds; lists the survivors. MUTANTS="a b" runs some.
mutate: $(STAMP)
	$(PY) tools/mutate.py $(MUTANTS)

# The random-model tests with fresh (not derandomized) hypothesis examples.
test-fresh: $(STAMP)
	MITHRIL_HYPOTHESIS_FRESH=1 $(PY) -m pytest -n 2 tests/test_random_models.py

lint: $(STAMP)
	$(PY) -m ruff check mithril tests benchmarks examples

bench: $(STAMP)
	$(PY) -m benchmarks.run

# The documentation site in site/ (open site/index.html), from docs/ and the docstrings;
# any warning (a broken link, an unknown API name) fails the build.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP) requirements/docs.txt
	$(PY) -m pip install --quiet -r requirements/docs.txt
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
