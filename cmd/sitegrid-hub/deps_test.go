package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoHeavyPackages: the hub binary links none of the packages its
// memory was cut by shedding (docs/hub.md, Memory): core/v1's types and
// strategicpatch (2.0 MiB with what they bring), Prometheus' client_golang
// (2.2 MiB with the protobuf runtime).
func TestLinksNoHeavyPackages(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"k8s.io/api/core/v1", "k8s.io/apimachinery/pkg/util/strategicpatch", "github.com/prometheus/client_golang"} {
			if pkg == banned || strings.HasPrefix(pkg, banned+"/") {
				t.Errorf("sitegrid-hub links %s; find what imports it with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/sitegrid-hub | grep %s", pkg, banned)
			}
		}
	}
}
