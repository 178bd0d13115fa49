# kube-sessions: `make test` runs everything CI runs; `make demo` shows it working.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck unit cluster binaries demo venv clean-cluster bench image

venv: $(STAMP)

# pip >= 25.1 understands PEP 735 dependency groups (`--group dev`).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install --quiet -e . --group dev
	touch $@

# Finds or builds (once, cached in ~/.cache/kube-sessions) etcd, the control plane, kubectl, helm.
binaries: $(STAMP)
	$(BIN)/kubesessions localcluster binaries

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck binaries
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest -m unit

# Benchmarks write bench-results/<name>.json and print a short table each.
BENCHES ?= localcluster worker_echo operator
bench: binaries
	for b in $(BENCHES); do $(BIN)/python bench/$$b.py; done

demo: binaries
	$(BIN)/kubesessions demo

clean-cluster: $(STAMP)
	$(BIN)/kubesessions localcluster down

# The worker image (needs a Docker engine; the build machines have none, so CI does not run it).
WORKER_IMAGE ?= ghcr.io/kube-sessions/kube-sessions-worker:0.1.0
image:
	docker build -f worker-image/Dockerfile -t $(WORKER_IMAGE) .
