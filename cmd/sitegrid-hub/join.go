package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/sitegrid/sitegrid/internal/hub/config"
	"github.com/sitegrid/sitegrid/internal/hub/join"
)

// runJoin is `sitegrid-hub join`: make this node an edge node.
func runJoin(ctx context.Context, args []string) error {
	var o join.Options
	var base string
	hostname, _ := os.Hostname()
	fs := flag.NewFlagSet("sitegrid-hub join", flag.ExitOnError)
	fs.StringVar(&o.Server, "server", "", "The cloud apiserver's URL, as this node reaches it (https://HOST:6443).")
	fs.StringVar(&o.Token, "token", "", "Bootstrap token bound to this node (sitegridctl node join-command prints it).")
	fs.Var(listFlag{&o.CACertHashes}, "discovery-token-ca-cert-hash", "Pins of the cluster CA's public key, sha256:<hex>, as kubeadm join takes them.")
	fs.StringVar(&o.NodeName, "node-name", strings.ToLower(hostname), "This node's name (default: the host name).")
	fs.StringVar(&o.Root, "root", "/", "Prefix of every path the join writes.")
	fs.StringVar(&o.KubeletKubeconfig, "kubelet-kubeconfig", "/etc/kubernetes/kubelet.conf", "The kubelet's kubeconfig, pointed at the hub.")
	fs.StringVar(&o.KubeProxyKubeconfig, "kube-proxy-kubeconfig", "", "kube-proxy's kubeconfig, pointed at the hub (when kube-proxy runs from a file).")
	fs.Var(listFlag{&o.ComponentKubeconfigs}, "component-kubeconfigs", "Other node components' kubeconfigs (the node's DNS...), pointed at the hub likewise, comma-separated.")
	fs.StringVar(&base, "config", "", "A HubConfiguration with this node's settings (listen address, health, service topology); the join fills in the rest.")
	fs.StringVar(&o.Init, "init", join.InitSystemd, "systemd: install, start and restart the units; none: write the files only.")
	fs.Var(listFlag{&o.RestartUnits}, "restart-units", "Units restarted once the hub runs (default kubelet.service).")
	fs.DurationVar(&o.Timeout, "timeout", 0, "Bound on discovery and on the wait for each certificate (default 5m).")
	_ = fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if base != "" {
		cfg, err := config.LoadFile(base)
		if err != nil {
			return err
		}
		o.Base = cfg
	}
	if o.RestartUnits == nil {
		o.RestartUnits = []string{"kubelet.service"}
	}
	o.Out = os.Stdout
	return join.Join(ctx, o)
}

// runLeave is `sitegrid-hub leave`: undo the join.
func runLeave(ctx context.Context, args []string) error {
	var o join.LeaveOptions
	fs := flag.NewFlagSet("sitegrid-hub leave", flag.ExitOnError)
	fs.StringVar(&o.Root, "root", "/", "Prefix of every path the join wrote.")
	_ = fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.Out = os.Stdout
	return join.Leave(ctx, o)
}
