package unitnames

import (
	"errors"
	"os"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func init() { plugin.Register(Name, setup) }

// setup reads
//
//	sitegridunits [ZONES...] {
//	    kubeconfig PATH   # through the node's hub
//	    node NAME         # default: $NODE_NAME
//	}
func setup(c *caddy.Controller) error {
	c.Next()
	zones := plugin.OriginsFromArgsOrServerBlock(c.RemainingArgs(), c.ServerBlockKeys)
	kubeconfig, node := "", os.Getenv("NODE_NAME")
	for c.NextBlock() {
		switch c.Val() {
		case "kubeconfig":
			if !c.NextArg() {
				return plugin.Error(Name, c.ArgErr())
			}
			kubeconfig = c.Val()
		case "node":
			if !c.NextArg() {
				return plugin.Error(Name, c.ArgErr())
			}
			node = c.Val()
		default:
			return plugin.Error(Name, c.Errf("unknown property %q", c.Val()))
		}
	}
	if node == "" {
		return plugin.Error(Name, errors.New("no node: set `node NAME` or $NODE_NAME"))
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return plugin.Error(Name, err)
	}
	cfg.UserAgent = "sitegrid-dns/units"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return plugin.Error(Name, err)
	}
	ix, err := NewIndex(client, node)
	if err != nil {
		return plugin.Error(Name, err)
	}
	c.OnStartup(func() error { ix.Start(); return nil })
	c.OnShutdown(func() error { ix.Stop(); return nil })
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		return &UnitNames{Next: next, Zones: zones, Index: ix}
	})
	return nil
}
