# kube-sessions: `make test` runs everything CI runs; `make demo` shows it working.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck unit cluster binaries demo venv clean-cluster bench node-packages images e2e e2e-prep prometheus-deps compat-js chromium-deps

venv: $(STAMP)

# pip >= 25.1 understands PEP 735 dependency groups (`--group dev`).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install --quiet -e '.[operator,worker]' --group dev
	touch $@

# Finds or builds (once, cached in ~/.cache/kube-sessions) etcd, the control plane, kubectl, helm,
# SeaweedFS (weed: the state store of suspended sessions).
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

# The JavaScript SDK and tsx for tests/compat/test_js_sdk.py, from tests/compat/js's lock file:
# installed again only when node_modules is missing or older than the lock. Without Node.js the
# tests skip, and so does this (saying so).
JS_COMPAT := tests/compat/js
JS_STAMP := $(JS_COMPAT)/node_modules/.installed
compat-js:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "compat-js: SKIPPED: no Node.js/npm here (Debian: apt-get install nodejs npm); the JavaScript SDK tests will skip"; \
	elif [ -f $(JS_STAMP) ] && [ $(JS_STAMP) -nt $(JS_COMPAT)/package-lock.json ] && [ $(JS_STAMP) -nt $(JS_COMPAT)/package.json ]; then \
	  echo "compat-js: $(JS_COMPAT)/node_modules is up to date"; \
	else \
	  npm ci --prefix $(JS_COMPAT) --no-audit --no-fund && touch $(JS_STAMP); \
	fi

# Debian's chromium for the browser example app (examples/browser; Playwright drives it, its own
# browser download is not used). Installed only when missing, where root and apt can; elsewhere
# tests/cluster/test_real_apps.py skips the browser test and says so.
chromium-deps:
	@if command -v chromium >/dev/null; then \
	  echo "chromium-deps: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else \
	  echo "chromium-deps: no chromium, and it cannot be installed here (needs root and apt): the browser app test will skip"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Each stage prints its time; the e2e stage runs where containers can (root), else says why
# not, and what it builds first is built during pytest (see scripts/test.sh).
test: $(STAMP)
	scripts/test.sh

unit: $(STAMP) prometheus-deps
	$(BIN)/pytest -m unit

# Benchmarks write bench-results/<name>.json and print a short table each.
BENCHES ?= localcluster worker_echo operator_bench gateway idle idle_cost warm_pool failover kube_clients real_apps
bench: binaries
	for b in $(BENCHES); do $(BIN)/python bench/$$b.py; done
	$(BIN)/python bench/summary.py

# The fault suite, full size: figures to bench-results/chaos.json (tests/cluster/test_chaos.py is the CI subset).
chaos: binaries
	$(BIN)/python bench/chaos.py

demo: binaries
	$(BIN)/kubesessions demo

clean-cluster: $(STAMP)
	$(BIN)/kubesessions localcluster down

# The Debian packages the kubelet node (`localcluster up --node kubelet`) and `make e2e` need:
# the container runtime, the CNI plugins, the image tools, iptables and ipset (the NetworkPolicy
# engine, kube-router, uses both). Needs root; installs only what is missing, so a second run
# costs one dpkg query.
NODE_PACKAGES := containerd runc containernetworking-plugins buildah mmdebstrap iptables ipset kmod
node-packages:
	@missing=$$(for p in $(NODE_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "node packages: all installed"; exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "node packages missing ($$missing): run 'make node-packages' as root" >&2; exit 1; fi; \
	echo "node packages: installing $$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing

# The pause, operator/gateway and worker images, built here from the Dockerfiles on a Debian
# base made by mmdebstrap (nothing pulled), and the four example apps' images (examples/*/Dockerfile,
# FROM that worker image); cached in ~/.cache/kube-sessions/images. Prints their sizes and writes
# bench-results/images.json.
images: $(STAMP) node-packages
	$(BIN)/python -m kubesessions.localcluster.images

# What `make e2e` needs before its tests: the packages, the kubelet node's binaries, the images.
e2e-prep: $(STAMP) node-packages images
	$(BIN)/kubesessions localcluster binaries --node kubelet

# End to end on the kubelet node (real kubelet, containerd, runc): the chart installed with
# the images built here, in a namespace enforcing PSS restricted. Needs root. On a failure, also
# the cluster as it was when a test failed (tests/e2e/conftest.py), printed last: a CI log's tail.
e2e: $(STAMP) e2e-prep
	$(BIN)/pytest tests/e2e -m e2e -p no:cacheprovider -rA || { cat build/e2e-diagnostics.txt 2>/dev/null; exit 1; }
