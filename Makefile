# ddnn — every target bootstraps .venv on a fresh clone (torch==2.13.0 CPU wheel first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_STAMP := ddnn/pb/.generated
PROTO_SRC := $(shell find protos -name '*.proto' 2>/dev/null)
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "} {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[serve,dev]"
	touch $@

venv: $(STAMP) ## create .venv and install ddnn with its extras

$(PROTO_STAMP): $(STAMP) $(PROTO_SRC) scripts/gen_proto.py
	rm -rf ddnn/pb
	$(PY) scripts/gen_proto.py
	touch $@

proto: $(PROTO_STAMP) ## generate gRPC/protobuf code into ddnn/pb (not committed)

lint: $(PROTO_STAMP) ## ruff
	$(VENV)/bin/ruff check .

test: $(PROTO_STAMP) ## lint + unit + integration tests (the CI command)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests/unit -q
	$(PY) -m pytest tests/integration -q

test-unit: $(PROTO_STAMP) ## unit tests only (fast, no servers)
	$(PY) -m pytest tests/unit -q

demo: $(PROTO_STAMP) ## run the main job on the shipped checkpoint (see README)
	$(PY) -m ddnn demo

bench: $(PROTO_STAMP) ## run benchmarks/ and rewrite BENCHMARKS.md
	$(PY) -m benchmarks.run --out BENCHMARKS.md

testbed: $(PROTO_STAMP) ## three namespaces + netem link profiles: WS vs normal vs auto, mode over time (root; TESTBED_ARGS=--quick)
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "make testbed: needs root (network namespaces, veth, tc netem): run 'sudo make testbed'" >&2; exit 1; fi
	@command -v ip >/dev/null && command -v tc >/dev/null || { \
	  echo "make testbed: needs ip and tc: apt-get install -y iproute2" >&2; exit 1; }
	$(PY) -m ddnn.testbed $(TESTBED_ARGS)

.PHONY: testbed

clean: ## remove generated code and caches (keeps .venv)
	rm -rf ddnn/pb .pytest_cache .ruff_cache .hypothesis

.PHONY: help venv proto lint test test-unit demo bench clean
