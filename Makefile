# kube-sessions: `make test` runs everything CI runs; `make demo` shows it working.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck unit cluster binaries demo venv clean-cluster bench image e2e-kind prometheus-deps

venv: $(STAMP)

# pip >= 25.1 understands PEP 735 dependency groups (`--group dev`).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install --quiet -e '.[operator,worker]' --group dev
	touch $@

# Finds or builds (once, cached in ~/.cache/kube-sessions) etcd, the control plane, kubectl, helm.
binaries: $(STAMP)
	$(BIN)/kubesessions localcluster binaries

# Prometheus and promtool (Debian's `prometheus` package) for the metrics and alert tests;
# installed only when missing (needs root and apt).
prometheus-deps:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then \
	  echo "prometheus-deps: $$(command -v prometheus), $$(command -v promtool)"; \
	else \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck binaries prometheus-deps
	$(BIN)/pytest

unit: $(STAMP) prometheus-deps
	$(BIN)/pytest -m unit

# Benchmarks write bench-results/<name>.json and print a short table each.
BENCHES ?= localcluster worker_echo operator_bench gateway idle idle_cost warm_pool
bench: binaries
	for b in $(BENCHES); do $(BIN)/python bench/$$b.py; done
	$(BIN)/python bench/summary.py

demo: binaries
	$(BIN)/kubesessions demo

clean-cluster: $(STAMP)
	$(BIN)/kubesessions localcluster down

# The worker image (needs a Docker engine; the build machines have none, so CI does not run it).
WORKER_IMAGE ?= ghcr.io/kube-sessions/kube-sessions-worker:0.1.0
image:
	docker build -f worker-image/Dockerfile -t $(WORKER_IMAGE) .

# End to end on kind, for machines with Docker and kind (the build machines have neither; the
# same smoke test runs against the local cluster in `make test`).
E2E_CLUSTER ?= kube-sessions-e2e
E2E_TAG ?= e2e
e2e-kind: $(STAMP)
	kind create cluster --name $(E2E_CLUSTER)
	trap 'kind delete cluster --name $(E2E_CLUSTER)' EXIT; \
	docker build -t ghcr.io/kube-sessions/kube-sessions:$(E2E_TAG) . && \
	docker build -f worker-image/Dockerfile -t $(WORKER_IMAGE) . && \
	kind load docker-image --name $(E2E_CLUSTER) ghcr.io/kube-sessions/kube-sessions:$(E2E_TAG) $(WORKER_IMAGE) && \
	kubectl create namespace sessions && \
	helm install ks charts/kube-sessions -n sessions --wait --timeout 180s \
	  --set image.tag=$(E2E_TAG) --set image.pullPolicy=Never --set 'watchNamespaces={sessions}' && \
	(kubectl -n sessions port-forward svc/ks-kube-sessions-gateway 18080:80 & echo $$! > .e2e-pf.pid) && \
	sleep 3 && $(BIN)/python scripts/smoke_test.py --gateway http://127.0.0.1:18080 --namespace sessions; \
	status=$$?; kill $$(cat .e2e-pf.pid) 2>/dev/null; rm -f .e2e-pf.pid; exit $$status
