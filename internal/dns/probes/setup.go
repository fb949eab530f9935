package probes

import (
	"net"
	"strings"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/ready"
)

func init() { plugin.Register(Name, setup) }

// DefaultAddress is where the probes listen when the directive names none:
// loopback, as a node's own kubelet or service manager asks.
const DefaultAddress = "127.0.0.1:10293"

// setup reads `probes [ADDRESS]`, once per server block; several blocks may
// name one address.
func setup(c *caddy.Controller) error {
	addr := DefaultAddress
	for i := 0; c.Next(); i++ {
		if i > 0 {
			return plugin.ErrOnce
		}
		args := c.RemainingArgs()
		switch len(args) {
		case 0:
		case 1:
			addr = args[0]
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return plugin.Error(Name, c.Errf("address %q: %v", addr, err))
			}
		default:
			return plugin.Error(Name, c.ArgErr())
		}
		if c.NextBlock() {
			return plugin.Error(Name, c.Errf("unknown property %q", c.Val()))
		}
	}
	config := dnsserver.GetConfig(c)
	// A check is named by its server block, as `zone:port`, and its plugin.
	keys := make([]string, len(c.ServerBlockKeys))
	for i, k := range c.ServerBlockKeys {
		keys[i] = strings.TrimPrefix(k, "dns://")
	}
	block := strings.Join(keys, ",")
	// e is this configuration's endpoint from its start on; a stop before
	// a start has nothing to close.
	var e *endpoint
	start := func() error {
		e = endpointFor(addr)
		for _, h := range config.Handlers() {
			if r, ok := h.(ready.Readiness); ok {
				e.add(block+" "+h.Name(), r)
			}
		}
		return e.start()
	}
	stop := func() error {
		if e == nil {
			return nil
		}
		return e.stop()
	}
	c.OnStartup(start)
	c.OnRestartFailed(start)
	c.OnRestart(stop)
	c.OnFinalShutdown(stop)
	return nil
}
