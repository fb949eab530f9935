package sitenet

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sitegrid/sitegrid/internal/lab/netns"
)

// TestSiteLANs: the nodes of a site reach each other and each other's
// routed pod networks over their LAN; a node of another site is out of
// reach both ways.
func TestSiteLANs(t *testing.T) {
	if err := netns.Available(); err != nil {
		t.Skipf("needs root and iproute2 (CI has both): %v", err)
	}
	ctx := context.Background()
	workdir := t.TempDir()
	nodes := []struct{ name, site, addr string }{
		{"site-1-node-1", "site-1", "198.18.1.10/24"},
		{"site-1-node-2", "site-1", "198.18.1.11/24"},
		{"site-2-node-1", "site-2", "198.18.2.10/24"},
	}
	ns := map[string]string{}
	ips := map[string]net.IP{}
	for _, n := range nodes {
		gateway := &net.IPNet{IP: net.ParseIP("198.18." + n.site[len("site-"):] + ".254"), Mask: net.CIDRMask(24, 32)}
		siteNS, err := EnsureSite(ctx, workdir, n.site, gateway)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = DeleteSite(context.Background(), workdir, n.site) })
		nodeNS, err := CreateNode(ctx, workdir, n.name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = netns.Delete(context.Background(), nodeNS) })
		ip, addr, err := net.ParseCIDR(n.addr)
		if err != nil {
			t.Fatal(err)
		}
		addr.IP = ip
		if err := Attach(ctx, siteNS, nodeNS, addr); err != nil {
			t.Fatal(err)
		}
		ns[n.name], ips[n.name] = nodeNS, ip
	}
	if err := Attach(ctx, Namespace(workdir, "site-1"), ns["site-1-node-1"], &net.IPNet{IP: net.IPv4(10, 0, 0, 1), Mask: net.CIDRMask(24, 32)}); err == nil {
		t.Errorf("an address outside 198.18.0.0/15 was accepted")
	}

	// A "pod" of site-1-node-2: an address of its pod network, routed from
	// site-1-node-1 over the LAN.
	pod := net.IPv4(198, 19, 1, 5)
	if err := netns.Command(ctx, ns["site-1-node-2"], "ip", "addr", "add", pod.String()+"/32", "dev", "lo").Run(); err != nil {
		t.Fatal(err)
	}
	if err := RoutePods(ctx, ns["site-1-node-1"], "198.19.1.0/24", ips["site-1-node-2"]); err != nil {
		t.Fatal(err)
	}
	if err := RoutePods(ctx, ns["site-1-node-1"], "10.1.0.0/24", ips["site-1-node-2"]); err == nil {
		t.Errorf("a route outside 198.18.0.0/15 was accepted")
	}

	serve := func(node string, ip net.IP) string {
		ln, err := netns.Listen(ns[node], net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = io.WriteString(c, node)
				c.Close()
			}
		}()
		return ln.Addr().String()
	}
	reach := func(from, addr string) (string, error) {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		c, err := netns.Dial(dctx, ns[from], addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		return string(b), err
	}
	node2 := serve("site-1-node-2", ips["site-1-node-2"])
	for _, tc := range []struct {
		from, to string
		addr     string
		want     bool
	}{
		{"site-1-node-1", "site-1-node-2", node2, true},
		{"site-1-node-2", "site-1-node-1", serve("site-1-node-1", ips["site-1-node-1"]), true},
		{"site-1-node-1", "a pod of site-1-node-2", serve("site-1-node-2", pod), true},
		{"site-1-node-1", "site-2-node-1", serve("site-2-node-1", ips["site-2-node-1"]), false},
		{"site-2-node-1", "site-1-node-1", serve("site-1-node-1", ips["site-1-node-1"]), false},
	} {
		got, err := reach(tc.from, tc.addr)
		switch {
		case tc.want && err != nil:
			t.Errorf("%s cannot reach %s at %s: %v", tc.from, tc.to, tc.addr, err)
		case !tc.want && err == nil:
			t.Errorf("%s reached %s at %s (answered %q), across sites", tc.from, tc.to, tc.addr, got)
		}
	}

	if err := Detach(ctx, ns["site-1-node-2"]); err != nil {
		t.Fatal(err)
	}
	if _, err := reach("site-1-node-1", node2); err == nil {
		t.Errorf("a detached node is still reachable")
	}
}
