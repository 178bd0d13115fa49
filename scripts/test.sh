#!/usr/bin/env bash
# `make test`: every stage, each timed (scripts/stage.sh); any failure fails the run.
#
# Where the e2e stage can run (root, overlayfs, cgroups), what it needs before its tests (the
# Debian packages, the kubelet, kube-proxy and kube-router, the images) is made in the background
# while pytest runs, at the lowest CPU and IO priority so that pytest's timing stays its own. On a
# fresh machine that is minutes of compiling and image building the e2e stage would otherwise
# wait for; on a warm one it finds everything cached in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
make="make --no-print-directory"
stage=scripts/stage.sh
prep_log=build/e2e-prep.log

e2e_refusal() {
	if [ "$(id -u)" != 0 ]; then
		echo "the kubelet node needs root (containerd, mounts, a bridge); run 'make e2e' as root"
	elif ! grep -qw overlay /proc/filesystems ||
		{ [ ! -d /sys/fs/cgroup/memory ] && [ ! -f /sys/fs/cgroup/cgroup.controllers ]; }; then
		echo "this machine cannot run containers (no overlayfs or no cgroups)"
	fi
}

$stage lint $make lint
$stage typecheck $make typecheck
$stage binaries $make binaries
$stage prometheus-deps $make prometheus-deps
$stage compat-js $make compat-js
$stage chromium-deps $make chromium-deps

refusal=$(e2e_refusal)
prep=""
if [ -z "$refusal" ]; then
	mkdir -p build
	echo "===== e2e-prep: in the background, log in $prep_log"
	# A session of its own, so that a failed run stops the whole build with it.
	setsid nice -n 19 ionice -c 3 $stage e2e-prep $make e2e-prep >"$prep_log" 2>&1 &
	prep=$!
	trap 'kill -- -$prep 2>/dev/null || true' EXIT
fi

$stage pytest .venv/bin/pytest

if [ -n "$refusal" ]; then
	echo "!!!!! e2e SKIPPED: $refusal !!!!!"
	exit 0
fi
echo "===== e2e-prep: waiting for it"
if ! wait "$prep"; then
	tail -n 60 "$prep_log"
	echo "===== e2e-prep failed: see $prep_log"
	exit 1
fi
tail -n 1 "$prep_log"
trap - EXIT
$stage e2e $make e2e
