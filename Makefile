# ddnn — every target bootstraps .venv on a fresh clone from the lock (torch==2.13.0 first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_STAMP := ddnn/pb/.generated
PROTO_SRC := $(shell find protos -name '*.proto' 2>/dev/null)
LOCK_FILES := lock/dev.txt lock/constraints.txt
PIP_VERSION := 26.3
TORCH_VERSION := 2.13.0
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "} {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

# The venv is made anew from the lock whenever the lock changes (so nothing outside it lingers):
# torch first (a local CPU wheel where pip finds one, else PyPI's CUDA build), under the lock's
# constraints; then every other distribution by hash; then ddnn itself, built without fetching.
$(STAMP): $(LOCK_FILES)
	$(PYTHON) -m venv --clear $(VENV)
	$(VENV)/bin/pip install -q pip==$(PIP_VERSION)
	$(VENV)/bin/pip install -q torch==$(TORCH_VERSION) -c lock/constraints.txt
	$(VENV)/bin/pip install -q --no-deps --require-hashes -r lock/dev.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	$(VENV)/bin/pip check
	touch $@

venv: $(STAMP) ## create .venv from the lock (torch==2.13.0 first, then lock/dev.txt by hash)

lock: $(STAMP) ## resolve pyproject.toml into lock/ and deploy/docker/requirements/ (uv), then rebuild .venv
	$(PY) scripts/lock.py
	$(MAKE) venv

lock-check: $(STAMP) ## fail (saying "run make lock") if pyproject.toml, the lock and the venv disagree
	$(PY) -m pytest tests/unit/test_lock.py -q -p no:cacheprovider

$(PROTO_STAMP): $(STAMP) $(PROTO_SRC) scripts/gen_proto.py
	rm -rf ddnn/pb
	$(PY) scripts/gen_proto.py
	touch $@

proto: $(PROTO_STAMP) ## generate gRPC/protobuf code into ddnn/pb (not committed)

lint: $(PROTO_STAMP) ## ruff
	$(VENV)/bin/ruff check .

# mypy reads its settings from pyproject.toml ([tool.mypy]: ddnn and services, not the generated
# ddnn/pb, whose .pyi stubs it uses: hence the proto dependency).
typecheck: $(PROTO_STAMP) ## mypy on ddnn and services
	$(VENV)/bin/mypy

test: $(PROTO_STAMP) ## lint + type check + unit + integration + container tests (the CI command)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest tests/unit -q
	$(PY) -m pytest tests/integration -q
	$(MAKE) --no-print-directory test-containers

# The container suite needs a Docker engine: without one it prints one line saying so and passes.
test-containers: $(PROTO_STAMP) ## build the images, docker compose up the testbed, break it on purpose (tests/containers)
	@if $(PY) -m tests.containers.engine; then $(PY) -m pytest tests/containers -q -s -p no:cacheprovider; fi

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

images: ## build ddnn-{edge,cloud,loadgen,prometheus} with no registry: local base + host wheelhouse (BASE=auto|public|local)
	$(PYTHON) scripts/build_images.py --base $(or $(BASE),auto)


clean: ## remove generated code and caches (keeps .venv)
	rm -rf ddnn/pb .pytest_cache .ruff_cache .mypy_cache .hypothesis

.PHONY: help venv lock lock-check proto lint typecheck test test-unit test-containers demo bench clean images
