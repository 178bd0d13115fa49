#!/usr/bin/env bash
# stage.sh NAME COMMAND...: run one stage of `make test` and print how long it took.
set -uo pipefail
name=$1
shift
start=$(date +%s)
echo "===== stage $name"
"$@"
rc=$?
echo "===== stage $name: $(($(date +%s) - start))s (exit $rc)"
exit $rc
