package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/lab/netns"
	"github.com/sitegrid/sitegrid/internal/lab/sitenet"
	"github.com/sitegrid/sitegrid/internal/link"
	"github.com/sitegrid/sitegrid/internal/process"
)

// With `lab up --kube-proxy` (root only) every lab node also runs the real
// kube-proxy, in iptables mode, inside the node's own network namespace: its
// rules are that node's rules. It talks to its node's hub at the hub's
// address, 127.0.0.1:PORT inside the namespace, which the lab relays to the
// hub; so kube-proxy reaches the cloud only through the hub, as on a real
// edge node, and what the hub's service-topology filter hands it is what
// ends up in the node's iptables. The hub is also reachable at the node's
// address inside the namespace, and the hub points the `default/kubernetes`
// Service there for kube-proxy (serviceTopology.kubernetesEndpoint): the
// node's in-cluster clients go through the hub as well.

// kube-proxy's identity, as kubeadm sets it up: a ServiceAccount bound to
// the system:node-proxier ClusterRole (edge.serviceAccountToken).
const (
	kubeProxyNamespace = "kube-system"
	kubeProxyUser      = "kube-proxy"
	// kubeProxyHealthz is kube-proxy's health address inside each namespace.
	kubeProxyHealthz = "127.0.0.1:10256"
)

// KubeProxyAvailable reports why the lab cannot run kube-proxy here, or nil.
func KubeProxyAvailable() error {
	if err := netns.Available(); err != nil {
		return fmt.Errorf("--kube-proxy: %w", err)
	}
	for _, p := range []string{"iptables", "iptables-save", "iptables-restore"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("--kube-proxy needs %s (Debian package iptables)", p)
		}
	}
	return nil
}

// setUpKubeProxy gives the node its namespace, the relay to its hub and
// kube-proxy's files. A real node's namespace is on its site's LAN; a kwok
// node's holds its address on loopback.
func (e *edge) setUpKubeProxy(ctx context.Context, en *edgeNode) error {
	en.netns = netns.Name(e.workdir, en.name)
	if en.real != nil {
		if err := e.joinSiteLAN(ctx, en); err != nil {
			return err
		}
	} else if err := netns.Create(ctx, en.netns, net.ParseIP(en.ip)); err != nil {
		return fmt.Errorf("network namespace of %s: %w", en.name, err)
	}
	// Service IPs are routed on a node (a real one has a default route):
	// kube-proxy's rules rewrite them before they leave.
	if err := netns.Command(ctx, en.netns, "ip", "route", "add", controlplane.DefaultServiceCIDR, "dev", "lo").Run(); err != nil {
		return fmt.Errorf("route to Services in the namespace of %s: %w", en.name, err)
	}
	relays := map[string]string{en.hubAPI: en.hubAPI, en.nodeHubAddr(): en.hubAPI}
	if en.real != nil {
		// A real node also reaches the cloud itself, through its uplink
		// (before it joins and after it leaves).
		relays[en.link.Addr()] = en.link.Addr()
	}
	for addr, to := range relays {
		ln, err := netns.Listen(en.netns, addr)
		if err != nil {
			return fmt.Errorf("address %s inside the namespace of %s: %w", addr, en.name, err)
		}
		en.hubRelays = append(en.hubRelays, link.Serve(ln, to))
	}
	if en.kubeProxyKubeconfig == "" {
		server := "https://" + en.hubAPI
		if en.real != nil {
			server = en.cloudURL()
		}
		var err error
		if en.kubeProxyKubeconfig, err = e.cp.WriteTokenKubeconfig("kube-proxy-"+en.name, server, e.kubeProxyToken); err != nil {
			return err
		}
	}
	// Conntrack sizes and timeouts are host-wide sysctls a namespace cannot
	// set: zero leaves them alone.
	cfg := map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"clientConnection":   map[string]any{"kubeconfig": en.kubeProxyKubeconfig},
		"hostnameOverride":   en.name,
		"mode":               "iptables",
		"clusterCIDR":        controlplane.DefaultClusterCIDR,
		"healthzBindAddress": kubeProxyHealthz,
		"metricsBindAddress": "127.0.0.1:10249",
		"conntrack":          map[string]any{"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
		"iptables":           map[string]any{"syncPeriod": "30s", "minSyncPeriod": "1s"},
		"nodePortAddresses":  []string{"primary"},
	}
	en.kubeProxyConfig = filepath.Join(en.dir, "kube-proxy.yaml")
	if err := writeYAML(en.kubeProxyConfig, cfg); err != nil {
		return err
	}
	if !e.superEdge.enabled() {
		return nil
	}
	// Its configuration while it reads through lite-apiserver.
	cfg["featureGates"] = map[string]bool{watchListClient: false}
	return writeYAML(superEdgeKubeProxyConfig(en), cfg)
}

func superEdgeKubeProxyConfig(en *edgeNode) string {
	return filepath.Join(en.dir, "kube-proxy-superedge.yaml")
}

func (en *edgeNode) startKubeProxy(ctx context.Context, bin string) error {
	config := en.kubeProxyConfig
	if en.runsSuperEdge() {
		config = superEdgeKubeProxyConfig(en)
	}
	p, err := process.Start(process.Spec{Name: "kube-proxy-" + en.name, Path: "ip",
		Args:    netns.CommandArgs(en.netns, bin, "--config", config, "--v=2"),
		LogFile: filepath.Join(en.dir, "kube-proxy.log")})
	if err != nil {
		return err
	}
	// Its health address is inside the namespace; so is the dial.
	return en.adopt(ctx, p, process.HTTPReady(en.netnsClient(), "http://"+kubeProxyHealthz+"/healthz"), &en.kubeProxy)
}

// nodeHubAddr is the hub's address on the node's IP (the hub's port).
func (en *edgeNode) nodeHubAddr() string {
	_, port, _ := net.SplitHostPort(en.hubAPI)
	return net.JoinHostPort(en.ip, port)
}

// tearDownKubeProxy stops the relay and deletes the namespace, which takes
// kube-proxy's rules with it.
func (en *edgeNode) tearDownKubeProxy() error {
	for _, l := range en.hubRelays {
		l.Close()
	}
	en.hubRelays = nil
	if en.netns == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A namespace goes when its last user does, not when it is deleted:
	// the node leaves its LAN now.
	if en.real != nil {
		if err := sitenet.Detach(ctx, en.netns); err != nil {
			return errors.Join(fmt.Errorf("node %s", en.name), err)
		}
	}
	if err := netns.Delete(ctx, en.netns); err != nil {
		return errors.Join(fmt.Errorf("node %s", en.name), err)
	}
	return nil
}
