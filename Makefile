# mmlake: `make demo` (set up + demo lake), `make test` (set up + test suite), `make ui` (Dagster UI).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export MMLAKE_HOME ?= $(CURDIR)/.mmlake
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
HOST ?= 127.0.0.1
PORT ?= 3000

.PHONY: install demo demo-crystal chromium postgres test ui bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Byte-compile the project's own modules (pip does it for site-packages): where
# PYTHONDONTWRITEBYTECODE is set, every process would otherwise compile them again at import.
install: $(BIN)/.installed
	@$(BIN)/python -m compileall -q mmlake assets resources >/dev/null

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/mmlake demo

# DATA: a CDVAE-layout CSV or folder (default: the 93-structure excerpt in mmlake/data/mp20_demo),
# e.g. make demo-crystal DATA=../shared/data/mp20_excerpt
DATA ?=
EPOCHS ?= 100
demo-crystal: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/mmlake crystal $(DATA) --epochs $(EPOCHS)

# Browser tests drive Debian's chromium (never a downloaded browser build).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The DuckLake catalog tests start their own PostgreSQL server (tests/postgres_server.py) from Debian's
# binaries; Debian's package would also create and start a "main" cluster, which nothing here uses.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		mkdir -p /etc/postgresql-common && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Two pytest-xdist workers (both cores); tests that share a session fixture (the demo lake, the
# `dagster dev` server, PostgreSQL) stay in one worker (tests/conftest.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: install chromium postgres
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

# Run from $(DAGSTER_HOME) (-d: the code stays here), so dagster dev does not warn that ./dagster.yaml
# "will not be used" (it is the template copied there); its "superseded, use dg dev" notice is for
# projects scaffolded with dg, which this one is not. Encoder options: the lake's config.yaml (README).
ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster instance concurrency set gpu 1 >/dev/null
	cd $(DAGSTER_HOME) && exec env --default-signal=INT,TERM \
		PYTHONWARNINGS='ignore:Function `dev_command` is superseded' \
		$(CURDIR)/$(BIN)/dagster dev -m assets.definitions -d $(CURDIR) -h $(HOST) -p $(PORT)

bench: install
	$(BIN)/python bench/chips.py
	$(BIN)/python bench/session.py
	$(BIN)/python bench/landing.py
	$(BIN)/python bench/lake_writes.py
	$(BIN)/python bench/encoders.py
	$(BIN)/python bench/segment.py
	$(BIN)/python bench/similar.py

clean:
	rm -rf $(MMLAKE_HOME) $(DAGSTER_HOME)
