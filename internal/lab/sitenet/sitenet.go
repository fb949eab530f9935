// Package sitenet wires the real lab nodes' networks as the seeds describe
// sites: the nodes of one site share a LAN, a bridge in a network namespace
// of the site's own, each node joined to it by a veth pair (eth0 inside the
// node's namespace); the nodes' pod networks are routed over that LAN; and
// nothing joins two sites' LANs or a LAN to the host, so sites cannot reach
// each other at all. A node reaches the cloud only through its uplink, which
// the lab relays into the node's namespace (internal/link) and cuts on
// `lab partition`.
//
// Everything is in 198.18.0.0/15: node addresses 198.18.<site>.<n>/24, pod
// networks as the controller-manager allocates them. Needs root and iproute2.
package sitenet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"strings"

	"github.com/sitegrid/sitegrid/internal/lab/netns"
)

// bridge is the site's switch inside the site's namespace; eth0 is a node's
// interface on its site's LAN.
const (
	bridge = "lan0"
	eth0   = "eth0"
)

// Namespace is the network namespace of a site's LAN in the lab at
// workdir, named apart from its nodes' (netns.Name).
func Namespace(workdir, site string) string { return netns.Name(workdir, "lan-"+site) }

// EnsureSite creates the site's LAN if it is not there: a namespace holding
// an up bridge, which holds gateway: the site's own services (its resolver)
// live at that address of the LAN.
func EnsureSite(ctx context.Context, workdir, site string, gateway *net.IPNet) (string, error) {
	ns := Namespace(workdir, site)
	if netns.Exists(ns) {
		return ns, nil
	}
	steps := [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "add", bridge, "type", "bridge"},
		{"-n", ns, "link", "set", bridge, "up"},
		{"-n", ns, "addr", "add", gateway.String(), "dev", bridge},
	}
	for _, args := range steps {
		if err := netns.IP(ctx, args...); err != nil {
			_ = netns.Delete(context.Background(), ns)
			return "", fmt.Errorf("LAN of site %s: %w", site, err)
		}
	}
	return ns, nil
}

// Attach joins the node's namespace (which must exist) to the site's LAN
// as eth0 with addr (198.18.S.N/24).
func Attach(ctx context.Context, siteNS, nodeNS string, addr *net.IPNet) error {
	if addr == nil || !inLabRange(addr.IP) {
		return fmt.Errorf("node address %v is not in 198.18.0.0/15", addr)
	}
	peer := peerName(nodeNS)
	// The end of an earlier veth of this node whose namespace is not gone
	// yet (a namespace outlives its deletion until its last user ends).
	_ = netns.IP(ctx, "-n", siteNS, "link", "del", peer)
	steps := [][]string{
		{"-n", nodeNS, "link", "add", eth0, "type", "veth", "peer", "name", peer, "netns", siteNS},
		{"-n", siteNS, "link", "set", peer, "master", bridge},
		{"-n", siteNS, "link", "set", peer, "up"},
		{"-n", nodeNS, "addr", "add", addr.String(), "dev", eth0},
		{"-n", nodeNS, "link", "set", eth0, "up"},
		{"-n", nodeNS, "link", "set", "lo", "up"},
	}
	for _, args := range steps {
		if err := netns.IP(ctx, args...); err != nil {
			_ = netns.IP(context.Background(), "-n", nodeNS, "link", "del", eth0)
			return fmt.Errorf("attach %s to its site's LAN: %w", nodeNS, err)
		}
	}
	return nil
}

// Detach takes the node off its site's LAN (deleting one end of the veth
// pair deletes both).
func Detach(ctx context.Context, nodeNS string) error {
	if !netns.Exists(nodeNS) {
		return nil
	}
	if err := netns.IP(ctx, "-n", nodeNS, "link", "del", eth0); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
		return err
	}
	return nil
}

// RoutePods routes a peer node's pod network (its podCIDR) over the site's
// LAN to that node.
func RoutePods(ctx context.Context, nodeNS, podCIDR string, via net.IP) error {
	_, cidr, err := net.ParseCIDR(podCIDR)
	if err != nil {
		return fmt.Errorf("pod network %q: %w", podCIDR, err)
	}
	if !inLabRange(cidr.IP) || !inLabRange(via) {
		return fmt.Errorf("route %s via %s: not in 198.18.0.0/15", podCIDR, via)
	}
	return netns.IP(ctx, "-n", nodeNS, "route", "replace", cidr.String(), "via", via.String(), "dev", eth0)
}

// DeleteSite removes the site's LAN; its nodes' veth ends go with it.
func DeleteSite(ctx context.Context, workdir, site string) error {
	return netns.Delete(ctx, Namespace(workdir, site))
}

var labRange = &net.IPNet{IP: net.IPv4(198, 18, 0, 0), Mask: net.CIDRMask(15, 32)}

func inLabRange(ip net.IP) bool { return ip != nil && labRange.Contains(ip) }

// peerName is the site-side end of a node's veth pair: unique per node,
// within the 15 bytes an interface name may have.
func peerName(nodeNS string) string {
	sum := sha256.Sum256([]byte(nodeNS))
	return "n" + hex.EncodeToString(sum[:7])
}

// CreateNode makes a real node's network namespace, empty but for an up
// loopback; Attach gives it its address. One left by a killed lab is
// replaced.
func CreateNode(ctx context.Context, workdir, node string) (string, error) {
	ns := netns.Name(workdir, node)
	if err := netns.Create(ctx, ns, nil); err != nil {
		return "", fmt.Errorf("network namespace of %s: %w", node, err)
	}
	return ns, nil
}
