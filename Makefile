# Two commands for a fresh clone:
#   make run    create .venv, install the project, run it on the embedded defaults
#   make test   create .venv, install the project and its test tools, run the test suite
# and, while editing, make test-fast: every test not marked slow, in parallel (about two
# and a half minutes on two cores, not twenty).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test test-fast lint bench clean

run: $(VENV)/.installed
	$(PY) manage.py runserver

# The tests start the app's commands and servers as processes: byte-compiled once here, each
# of them starts in half the time, even where PYTHONDONTWRITEBYTECODE is set.
COMPILE := $(PY) -m compileall -q project apps ext tests bench manage.py >/dev/null

test: $(VENV)/.installed-test
	$(COMPILE)
	$(PY) -m pytest $(PYTEST_ARGS)

# Two test processes per core: about half of a test's time is spent waiting (on sleeps,
# started commands and sockets), so one per core leaves the CPU idle.
TEST_WORKERS ?= $$(( $$(nproc) * 2 ))

test-fast: $(VENV)/.installed-test
	$(COMPILE)
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check project apps ext tests bench
	$(VENV)/bin/mypy project apps ext

bench: $(VENV)/.installed-test
	$(PY) -m bench

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml setup.py ext/_frames.pyx
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info ext/_frames.c ext/*.so
