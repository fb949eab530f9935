package main

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/coredns/caddy/caddyfile"
	"github.com/coredns/coredns/core/dnsserver"
	"sigs.k8s.io/yaml"

	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestDirectiveOrder: kubestore swaps the kubernetes plugin's store in its
// start-up, which must run before the plugin's own (start-ups run in
// directive order); the unit-local names are rewritten before the cache
// and the kubernetes plugin see them.
func TestDirectiveOrder(t *testing.T) {
	at := func(d string) int {
		i := slices.Index(dnsserver.Directives, d)
		if i < 0 {
			t.Fatalf("%s is not a directive", d)
		}
		return i
	}
	if at("kubestore") > at("kubernetes") {
		t.Error("kubestore comes after kubernetes")
	}
	if at("sitegridunits") > at("cache") || at("sitegridunits") > at("kubernetes") {
		t.Error("sitegridunits comes after cache or kubernetes")
	}
}

// TestManifestCorefile: the DaemonSet's Corefile names only plugins this
// binary has.
func TestManifestCorefile(t *testing.T) {
	data, err := os.ReadFile(testenv.RepoRoot(t) + "/config/dns/sitegrid-dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal([]byte(strings.Split(string(data), "\n---\n")[0]), &cm); err != nil {
		t.Fatal(err)
	}
	corefile := cm.Data["Corefile"]
	if cm.Kind != "ConfigMap" || corefile == "" {
		t.Fatalf("the manifest's first document is a %s without a Corefile", cm.Kind)
	}
	blocks, err := caddyfile.Parse("Corefile", strings.NewReader(corefile), dnsserver.Directives)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kubestore", "kubernetes", "probes", "sitegridunits"} {
		if _, ok := blocks[0].Tokens[want]; !ok {
			t.Errorf("the cluster domain's block has no %s", want)
		}
	}
}
