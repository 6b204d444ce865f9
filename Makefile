# The two commands of the README: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lock services tools run test lint typecheck docs docs-shots unit bench clean

install: $(STAMP)

# Re-install only when the pinned dependencies change. Every package, the dependencies'
# dependencies too, comes from the hashed lock (`make lock` writes it); the project itself is
# installed on top, without resolving anything.
$(STAMP): pyproject.toml requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Regenerate requirements.lock (runtime, for the image) and requirements-dev.lock (+ the dev
# extra) from pyproject.toml's pins, with hashes, for Python 3.11 on any platform. uv runs
# from a throwaway venv of its own, never from the project's.
LOCKVENV ?= /tmp/callback-sink-lockvenv
UV_VERSION ?= 0.13.9
UV_COMPILE = $(LOCKVENV)/bin/uv pip compile pyproject.toml --generate-hashes --universal \
	--python-version 3.11 --custom-compile-command 'make lock' --quiet
lock:
	test -x $(LOCKVENV)/bin/uv || \
	  ($(PYTHON) -m venv $(LOCKVENV) && $(LOCKVENV)/bin/pip install --quiet uv==$(UV_VERSION))
	$(UV_COMPILE) -o requirements.lock
	$(UV_COMPILE) --extra dev -o requirements-dev.lock

services:
	bash deploy/ensure-services.sh

# Command-line tools the tests call (promtool, wrk): installed when missing, quick when present.
tools:
	bash deploy/ensure-tools.sh

# Silent: with SINK_LOG_FORMAT=json its stdout is the sink's JSON log lines and nothing else;
# the set-up's own output (make, pip, ensure-services) goes to stderr.
run:
	@$(MAKE) -s --no-print-directory install services >&2
	@$(BIN)/callback-sink run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The documentation site (docs/, MyST Markdown + the API from the docstrings) into
# docs/_build/html. Warnings are errors (-W, -n: every cross-reference must resolve).
docs: install
	$(BIN)/sphinx-build -E -W --keep-going -n -q -b html docs docs/_build/html

# Screenshots of three pages of the built site, for a look without a browser (needs chromium).
SHOTS ?= /tmp/docs-shots
docs-shots: docs
	mkdir -p $(SHOTS)
	for page in index reference/settings explanation/architecture; do \
	  test ! -f docs/_build/html/$$page.html || chromium --headless --no-sandbox --hide-scrollbars \
	    --window-size=1280,1600 --screenshot=$(SHOTS)/$$(echo $$page | tr / -).png \
	    file://$(CURDIR)/docs/_build/html/$$page.html; \
	done

# The fault-injection scenarios stop and start RabbitMQ and Redis: they run last, on their own.
test: install services tools lint typecheck docs
	$(BIN)/pytest -m "not faults"
	$(BIN)/pytest -m faults -s

# The quick loop while editing: `test` without lint, typecheck and the fault scenarios (which
# stop RabbitMQ and Redis). It still talks to the real broker and Redis: the suite has no mock
# layer to split off, so "unit" means "everything but faults", not "no services".
unit: install services tools
	$(BIN)/pytest -m "not faults"

# Medians of 3 interleaved rounds (about 10 minutes); `bench/bench.py --quick` is the smoke run.
bench: install services
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info docs/_build
