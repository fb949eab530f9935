// Command sitegrid-dns is the DNS server of an edge node: CoreDNS, built
// with the plugins a node needs, its kubernetes plugin reading through the
// node's hub (so it answers from the hub's cache offline, and sees only the
// node's unit's endpoints of a ServiceGrid), and sitegrid's plugin for
// SuperEdge's unit-local StatefulSetGrid names. See docs/dns.md.
package main

import (
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

	_ "github.com/sitegrid/sitegrid/internal/dns/unitnames"
)

// directives are the plugins, in the order a query passes them: the
// unit-local names are rewritten before the cache and the kubernetes plugin
// see them.
var directives = []string{
	"reload", "bind", "ready", "health", "prometheus", "errors", "log", "loadbalance",
	"sitegridunits", "cache", "hosts", "kubernetes", "loop", "forward",
}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }
