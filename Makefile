# Two commands for a newcomer: `make demo` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test setup check-java bench lint clean

demo: setup check-java
	$(BIN)/streamsight demo

test: setup check-java
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup check-java
	$(BIN)/streamsight bench --seconds 30

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + ")")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

check-java:
	@scripts/check-java

clean:
	rm -rf var/ .pytest_cache
