#!/usr/bin/env bash
# Runs a stage of `make test` and prints how long it took, so CI logs show
# what each stage costs (docs/testing.md).
name=$1
shift
start=$(date +%s)
"$@"
rc=$?
echo "== stage $name: $(( $(date +%s) - start ))s (exit $rc)"
exit $rc
