#!/usr/bin/env bash
# Fails when a test left a process running. Every process the harness starts
# must be gone when `go test` returns. Only processes of tests are looked at
# (their state lives in test temp folders), so a lab running on the same
# machine is no leak.
set -uo pipefail
where='(sitegrid-cp-|k8s_test_framework|sitegrid-e2e-|/Test[A-Za-z0-9_]+[0-9]+/)'
pattern="(kube-apiserver|kube-controller-manager|kube-scheduler|etcd|kwok|sitegrid-manager|sitegridctl|containerd).*$where"
leaked=$(pgrep -a -f "$pattern" | grep -v -e pgrep -e check-leaks || true)
if [ -n "$leaked" ]; then
  echo "processes left running after the tests:" >&2
  echo "$leaked" >&2
  exit 1
fi
# containerd's snapshots and the kubelets' volumes are mounts under a
# test's folder: they must be gone with the test too.
mounts=$(grep -E "$where" /proc/mounts || true)
if [ -n "$mounts" ]; then
  echo "mounts left after the tests:" >&2
  echo "$mounts" >&2
  exit 1
fi
# Real nodes' network namespaces, cgroups and CNI cache entries (the lab
# names them sitegrid-<hash>-...) go with their lab.
left=$( (ip netns list 2>/dev/null | grep -E '^sitegrid-'; ls -d /sys/fs/cgroup/*/sitegrid-* 2>/dev/null; ls /var/lib/cni/results 2>/dev/null | grep -E '^sitegrid-') || true)
if [ -n "$left" ]; then
  echo "network namespaces, cgroups or CNI entries left after the tests:" >&2
  echo "$left" >&2
  exit 1
fi
# A shim's socket outlives a killed node; the lab removes those of shims
# that are gone. With no containerd left, none may be left either.
if ! pgrep -x containerd >/dev/null && ! pgrep -f containerd-shim >/dev/null; then
  sockets=$(ls /run/containerd/s 2>/dev/null || true)
  if [ -n "$sockets" ]; then
    echo "shim sockets left in /run/containerd/s after the tests:" >&2
    echo "$sockets" >&2
    exit 1
  fi
fi
echo "no leaked processes, mounts, namespaces, cgroups or shim sockets"
