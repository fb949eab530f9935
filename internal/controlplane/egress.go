package controlplane

import (
	"fmt"
	"os"
	"path/filepath"
)

// writeEgressSelector writes the apiserver's EgressSelectorConfiguration:
// the "cluster" selection (the apiserver's connections to nodes, and to
// Service-referenced webhooks and aggregated APIs) goes as HTTP CONNECT to
// the tunnel server's unix socket; "controlplane" and "etcd" stay direct.
func writeEgressSelector(dir, socket string) (string, error) {
	cfg := fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
`, socket)
	path := filepath.Join(dir, "egress-selector.yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}
