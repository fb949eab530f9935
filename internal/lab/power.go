package lab

import (
	"context"
	"fmt"
	"net"
	"time"

	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/lab/sitenet"
	"github.com/sitegrid/sitegrid/internal/process"
)

// A node's power: `lab stop-node` and `lab start-node` switch it off and on,
// `lab reboot` does both. A kwok node's processes are stopped and started;
// a real node loses power as a machine does (powerCut: everything killed,
// its runtime state, mounts and network gone, its disks kept) and boots its
// services again from what its disks hold, with or without the cloud.

// powerOff stops every process of the node.
func (en *edgeNode) powerOff(ctx context.Context) {
	en.mu.Lock()
	procs := []*process.Process{en.dns, en.kubeProxy, en.kubelet, en.liteAPIServer, en.containerd, en.hub}
	// Empty slots: the supervisor restarts only what exits while on.
	en.dns, en.kubeProxy, en.kubelet, en.containerd, en.hub, en.liteAPIServer = nil, nil, nil, nil, nil, nil
	en.mu.Unlock()
	if en.real == nil {
		for _, p := range procs {
			if p != nil {
				p.Stop(10 * time.Second)
			}
		}
		return
	}
	for _, p := range procs {
		if p != nil {
			p.Kill()
		}
	}
	if err := en.powerCut(ctx); err != nil {
		klog.ErrorS(err, "power cut", "node", en.name)
	}
	// The network namespace is the machine's running network: its
	// interfaces, routes and rules are gone with the power.
	if err := en.tearDownKubeProxy(); err != nil {
		klog.ErrorS(err, "power cut", "node", en.name)
	}
}

// powerOn boots the node's services.
func (e *edge) powerOn(ctx context.Context, en *edgeNode) error {
	if en.real != nil {
		if err := e.setUpKubeProxy(ctx, en); err != nil {
			return err
		}
	}
	if en.real != nil {
		if en.isJoined() {
			if err := en.startHub(ctx, e.hubBin); err != nil {
				return err
			}
		}
		return e.bootReal(ctx, en)
	}
	if err := en.startHub(ctx, e.hubBin); err != nil {
		return err
	}
	if err := en.startKwok(ctx, e.cp); err != nil {
		return err
	}
	if en.ownNetwork {
		return en.startKubeProxy(ctx, e.kubeProxyBin)
	}
	return nil
}

// reboot power-cycles targets (nodes or sites) and returns the nodes it
// rebooted. A node switched off with `lab stop-node` stays off.
func (e *edge) reboot(ctx context.Context, targets []string) ([]string, error) {
	nodes, err := e.resolve(targets)
	if err != nil {
		return nil, err
	}
	for _, en := range nodes {
		en.mu.Lock()
		off := en.off
		en.mu.Unlock()
		if off {
			return nil, fmt.Errorf("node %s is powered off: start it with `sitegridctl lab start-node %s`", en.name, en.name)
		}
	}
	// Off all at once, as a site's power goes, and the supervisor keeps
	// its hands off meanwhile.
	for _, en := range nodes {
		en.mu.Lock()
		en.off = true
		en.mu.Unlock()
		en.powerOff(ctx)
	}
	var names []string
	for _, en := range nodes {
		en.mu.Lock()
		en.off = false
		en.mu.Unlock()
		if err := e.powerOn(ctx, en); err != nil {
			return names, fmt.Errorf("boot %s: %w", en.name, err)
		}
		names = append(names, en.name)
	}
	return names, nil
}

// bootReal starts a real node's containerd, kubelet and kube-proxy; the
// first boot also writes their configuration, waits for the kubelet to
// register and joins the node (join.go), later ones route the site's pods
// again on the new network.
func (e *edge) bootReal(ctx context.Context, en *edgeNode) error {
	first := en.real.kubeletConfig == ""
	if first {
		if err := e.setUpReal(ctx, en); err != nil {
			return err
		}
		if err := e.writeDNSConfig(ctx, en); err != nil {
			return err
		}
	}
	e.hostMu.Lock()
	err := e.ensureSiteResolver(ctx, en.site, en.ip)
	e.hostMu.Unlock()
	if err != nil {
		return err
	}
	if err := e.startContainerd(ctx, en); err != nil {
		return err
	}
	if !first && en.runsSuperEdge() {
		if err := e.startSuperEdge(ctx, en); err != nil {
			return err
		}
	}
	if err := en.startRealKubelet(ctx, e.real.kubeletBin); err != nil {
		return err
	}
	if first {
		// Registered directly with the cloud, the node joins: its hub
		// starts, the kubelet restarts through it and kube-proxy starts.
		// A node of a SuperEdge lab starts SuperEdge's agents instead.
		if err := e.registerReal(ctx, en); err != nil {
			return err
		}
		if e.superEdge.enabled() {
			return e.bootSuperEdge(ctx, en)
		}
		return e.joinHub(ctx, en)
	}
	if err := e.routeSite(ctx, en.site); err != nil {
		return err
	}
	if err := en.startDNS(ctx, e.dnsBin); err != nil {
		return err
	}
	return en.startKubeProxy(ctx, e.kubeProxyBin)
}

// joinSiteLAN wires the real node's namespace to its site's LAN at the
// node's address, a /24 of the site.
func (e *edge) joinSiteLAN(ctx context.Context, en *edgeNode) error {
	// A site's nodes start together; its LAN is made once.
	e.hostMu.Lock()
	lan, err := sitenet.EnsureSite(ctx, e.workdir, en.site, &net.IPNet{IP: siteResolverIP(en.ip), Mask: net.CIDRMask(24, 32)})
	e.hostMu.Unlock()
	if err != nil {
		return err
	}
	if _, err := sitenet.CreateNode(ctx, e.workdir, en.name); err != nil {
		return err
	}
	return sitenet.Attach(ctx, lan, en.netns, &net.IPNet{IP: net.ParseIP(en.ip), Mask: net.CIDRMask(24, 32)})
}
