// Command sitegrid-dns is the DNS server of an edge node: CoreDNS, built
// with the plugins a node needs, its kubernetes plugin reading through the
// node's hub (so it answers from the hub's cache offline, and sees only the
// node's unit's endpoints of a ServiceGrid), and sitegrid's plugin for
// SuperEdge's unit-local StatefulSetGrid names. See docs/dns.md.
package main

import (
	"log"
	"runtime/debug"
	"time"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"

	_ "github.com/sitegrid/sitegrid/internal/dns/kubestore"
	_ "github.com/sitegrid/sitegrid/internal/dns/probes"
	_ "github.com/sitegrid/sitegrid/internal/dns/unitnames"
	"github.com/sitegrid/sitegrid/internal/process"
)

// directives are the plugins, in the order a query passes them: the
// unit-local names are rewritten before the cache and the kubernetes plugin
// see them.
var directives = []string{
	"reload", "bind", "probes", "ready", "health", "prometheus", "errors", "log", "loadbalance",
	"sitegridunits", "cache", "hosts", "kubestore", "kubernetes", "loop", "forward",
}

func init() { dnsserver.Directives = directives }

func main() {
	// The runtime's default GC target: at half of it (the hub's 50) the
	// collector cost a tenth of the queries per second under load
	// (hack/bench/dns), and idle the heap is handed back anyway.
	go releaseMemory()
	coremain.Run()
}

// releaseMemory hands back, once the server runs and then every few
// minutes, the executable's pages only start-up used (client-go's and
// CoreDNS's init functions, the plugins' setup) and the heap's free memory:
// a node's DNS then holds the pages its queries use (docs/dns.md, memory).
func releaseMemory() {
	for wait := 20 * time.Second; ; wait = 5 * time.Minute {
		time.Sleep(wait)
		if err := process.ReleaseCodePages(); err != nil {
			log.Printf("[WARNING] release code pages: %v", err)
		}
		debug.FreeOSMemory()
	}
}
