# Two commands matter (see README): `make demo` and `make test`.
# Both create .venv on first use; a torch CPU build is pinned first so that
# nothing later resolves a multi-gigabyte CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEPS := client/pyproject.toml server/pyproject.toml agent/pyproject.toml tests/pyproject.toml requirements-dev.txt

.PHONY: setup flatc postgres test lint demo clean

setup: $(STAMP)

$(STAMP): $(DEPS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e "client[akida,convert,aedat,data]" -e server -e "agent[akida]" -e tests -r requirements-dev.txt
	touch $(STAMP)

# flatc checks that the committed program-format code matches protos/program.fbs.
flatc:
	command -v flatc >/dev/null || { S=$$([ "$$(id -u)" -eq 0 ] || echo sudo); $$S apt-get update -qq && $$S apt-get install -y -qq flatbuffers-compiler; }

# The tests start their own throwaway PostgreSQL (tests/support/postgres.py) and
# need its server binaries: on PATH or in Debian's /usr/lib/postgresql/*/bin.
postgres:
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { S=$$([ "$$(id -u)" -eq 0 ] || echo sudo); $$S apt-get update -qq && $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

test: setup flatc postgres
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: setup
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV)
