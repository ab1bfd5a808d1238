# Entry points: `make demo` and `make test` work on a fresh Debian 12 + Python 3.11 machine.
VENV := .venv
PY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
# bench/ may not exist yet; lint only the directories that do.
LINT_DIRS := $(wildcard tools tests bench)

.PHONY: setup test lint demo clean distclean

setup:
	bash scripts/setup.sh

lint: setup
	$(RUFF) check $(LINT_DIRS)

test: setup
	$(RUFF) check $(LINT_DIRS)
	$(PY) -m pytest -q tests

demo: setup
	$(VENV)/bin/cats demo

clean:
	rm -rf build out runs tools/cats/_generated tools/*.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
