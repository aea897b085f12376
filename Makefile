# pullbroker — every target installs what it needs, idempotently, on a clean machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEB_STAMP := .cache/.debs-installed
DEBS := docker-registry apache2-utils skopeo umoci docker.io containerd runc podman postgresql
HOME_DIR ?= $(or $(PULLBROKER_HOME),$(HOME)/.pullbroker)
LISTEN ?= 127.0.0.1:50051
CONFIG ?=
PROTO_SRC := $(wildcard protos/pullbroker/v1/*.proto)
GEN_DIR := clients

.PHONY: all venv debs protos check-protos lint typecheck imports test test-unit run demo bench clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

# Debian packages the integration tests drive (registry, skopeo, umoci, htpasswd, PostgreSQL:
# tests start their own throwaway clusters as the postgres user, never the system service).
$(DEB_STAMP):
	@mkdir -p $(dir $@)
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	touch $@

debs: $(DEB_STAMP)

# The one way generated stubs are made; they are committed, and tests/unit/test_protos_fresh.py
# fails when they differ from what this target would write.
protos: $(STAMP)
	$(BIN)/python protos/generate.py $(GEN_DIR)

check-protos: $(STAMP)
	$(BIN)/python protos/generate.py --check $(GEN_DIR)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Tests and benchmarks too: their fakes must keep matching the Protocols they stand in for.
typecheck: $(STAMP)
	$(BIN)/mypy clients/pullbroker_client service/pullbroker_service sidecar/pullbroker_sidecar tests bench

imports: $(STAMP)
	$(BIN)/lint-imports

test: $(STAMP) $(DEB_STAMP) check-protos lint typecheck imports
	$(BIN)/pytest -q

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# The broker and, once it is up, the sidecar daemon on the same home (dev CA, embedded
# store): helpers talk to $(HOME_DIR)/sidecar.sock. Ctrl-C stops both. A broker that exits
# while starting (its one-line error says why) ends `make run` at once.
run: $(STAMP)
	@trap 'kill $$broker $$sidecar 2>/dev/null; wait' INT TERM EXIT; \
	$(BIN)/pullbroker serve --home $(HOME_DIR) --listen $(LISTEN) $(if $(CONFIG),--config $(CONFIG)) & broker=$$!; \
	$(BIN)/python -c 'import json,os,sys,time,pathlib; f=pathlib.Path(sys.argv[1])/"broker.json"; pid=int(sys.argv[2]); \
	  up=lambda: f.exists() and json.loads(f.read_text() or "{}").get("pid")==pid; \
	  alive=lambda: os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2]!="Z"; \
	  [time.sleep(0.1) for _ in range(300) if not up() and alive()]; sys.exit(0 if up() else 1)' $(HOME_DIR) $$broker \
	  || { wait $$broker; exit 1; }; \
	$(BIN)/pullbroker-sidecar run --home $(HOME_DIR) & sidecar=$$!; \
	echo "broker and sidecar running in $(HOME_DIR) (Ctrl-C stops both); in another terminal:"; \
	echo "  . .venv/bin/activate && pullbroker registry list --home $(HOME_DIR)"; \
	wait $$broker

demo: $(STAMP) $(DEB_STAMP)
	$(BIN)/python -m tests.demo

bench: $(STAMP) $(DEB_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
