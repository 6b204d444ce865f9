# The two commands of the README: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install services run test lint typecheck unit bench clean

install: $(STAMP)

# Re-install only when the pinned dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

services:
	bash deploy/ensure-services.sh

run: install services
	$(BIN)/callback-sink run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The fault-injection scenarios stop and start RabbitMQ and Redis: they run last, on their own.
test: install services lint typecheck
	$(BIN)/pytest -m "not faults"
	$(BIN)/pytest -m faults -s

# Medians of 3 interleaved rounds (about 10 minutes); `bench/bench.py --quick` is the smoke run.
bench: install services
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info
