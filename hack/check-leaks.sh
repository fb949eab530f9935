#!/usr/bin/env bash
# Fails when a test left a control-plane process running. Every process the
# harness starts must be gone when `go test` returns.
set -uo pipefail
leaked=$(pgrep -a -f '(^|/)(kube-apiserver|kube-controller-manager|kube-scheduler|etcd|kwok|sitegrid-manager|sitegrid-hub)( |$)' | grep -v -e pgrep -e check-leaks || true)
if [ -n "$leaked" ]; then
  echo "processes left running after the tests:" >&2
  echo "$leaked" >&2
  exit 1
fi
echo "no leaked processes"
