#!/usr/bin/env bash
# What govulncheck finds reachable in the kube-router the kubelet node runs, as built by
# `kubesessions localcluster binaries --node kubelet` (README "Network isolation" says what
# it found and what remains). vuln.go.dev need not be reachable: the database's OSV files come
# from the golang.org/x/vulndb module on the Go module proxy. Exits 3 when it finds any.
set -euo pipefail
build="${XDG_CACHE_HOME:-$HOME/.cache}/kube-sessions/build/kube-router"
if [ ! -f "$build/go.mod" ]; then
  echo "no kube-router build in $build: run 'kubesessions localcluster binaries --node kubelet' first" >&2
  exit 2
fi
db="$(cd /tmp && go mod download -json golang.org/x/vulndb@latest | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')/data/osv"
go install golang.org/x/vuln/cmd/govulncheck@v1.10.0
cd "$build"
GOFLAGS=-mod=mod GOTOOLCHAIN=local "$(go env GOPATH)/bin/govulncheck" -db "file://$db" \
  github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
