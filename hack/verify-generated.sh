#!/usr/bin/env bash
# Fails when `make generate manifests` changed or added files: the generated
# code and manifests in the commit are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
stale=$(git status --porcelain -- api config | grep -v '^??' || true)
new=$(git status --porcelain -- api config | grep '^??' || true)
if [ -n "$stale$new" ]; then
  echo "generated files are stale; run 'make generate manifests' and commit:" >&2
  echo "$stale$new" >&2
  git --no-pager diff --stat -- api config >&2
  exit 1
fi
echo "generated files are up to date"
