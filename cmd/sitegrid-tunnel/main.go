// Command sitegrid-tunnel is the cloud end of the cloud-to-edge tunnel:
// kube-apiserver's egress selector sends it its connections to nodes as
// HTTP CONNECT, and it carries them over the connections the nodes' hubs
// dialled out to it. See docs/tunnel.md.
package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/tunnel"
	"github.com/sitegrid/sitegrid/internal/tunnel/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		kubeconfig, certFile, keyFile, nodeCA, connectCA, clientNames, kubeletClients, peerCA, peerNames string
		cfg                                                                                              server.Config
	)
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("sitegrid-tunnel", flag.ExitOnError)
	fs.StringVar(&kubeconfig, "kubeconfig", "", "Kubeconfig of the cloud apiserver (default: in-cluster).")
	fs.StringVar(&cfg.Namespace, "namespace", envOr("POD_NAMESPACE", "sitegrid-system"), "Namespace of the tunnel's Leases.")
	fs.StringVar(&cfg.Replica, "replica", envOr("POD_NAME", host), "This replica's name in the Leases.")
	fs.StringVar(&cfg.AgentAddress, "agent-address", fmt.Sprintf(":%d", tunnel.DefaultAgentPort), "Where node agents connect (TLS with node client certificates).")
	fs.StringVar(&certFile, "tls-cert-file", "", "Serving certificate towards agents and TCP CONNECT clients.")
	fs.StringVar(&keyFile, "tls-private-key-file", "", "Serving key.")
	fs.StringVar(&nodeCA, "node-client-ca-file", "", "CA of node client certificates (the cluster CA).")
	fs.StringVar(&cfg.ConnectSocket, "connect-socket", "", "Unix socket for a co-located apiserver's CONNECTs (mode 0600).")
	fs.StringVar(&cfg.ConnectAddress, "connect-address", "", "TCP address for the apiserver's CONNECTs, with mTLS.")
	fs.StringVar(&connectCA, "connect-client-ca-file", "", "CA of the apiserver's egress client certificate (with --connect-address).")
	fs.StringVar(&clientNames, "connect-client-names", "kube-apiserver-egress", "Comma-separated common names allowed to CONNECT over TCP.")
	fs.StringVar(&kubeletClients, "kubelet-client-names", "", "Comma-separated common names allowed to CONNECT over TCP to nodes' kubelets only: metrics-server and Prometheus, with this endpoint as their HTTPS proxy.")
	fs.StringVar(&cfg.PeerAddress, "peer-address", "", "Where other replicas forward CONNECTs for the nodes this one holds (TLS; default: no forwarding).")
	fs.StringVar(&cfg.PeerAdvertise, "peer-advertise-address", "", "What other replicas dial for --peer-address (the pod IP and port).")
	fs.StringVar(&peerCA, "peer-ca-file", "", "CA of the replicas' certificate (default: --node-client-ca-file).")
	fs.StringVar(&peerNames, "peer-names", "sitegrid-tunnel", "Comma-separated common names of the replicas' certificate.")
	fs.StringVar(&cfg.HealthAddress, "health-address", ":8133", "Address of /healthz, /readyz and /metrics (plain HTTP).")
	fs.BoolVar(&cfg.Direct, "direct", true, "Dial targets that are no tunnelled node's directly (cloud nodes, Service-referenced webhooks and aggregated APIs).")
	klog.InitFlags(fs)
	_ = fs.Parse(os.Args[1:])

	rc, err := restConfig(kubeconfig)
	if err != nil {
		return err
	}
	rc.UserAgent = "sitegrid-tunnel"
	if cfg.Client, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	kp := &tunnel.KeyPairFile{CertFile: certFile, KeyFile: keyFile}
	if certFile == "" || keyFile == "" {
		return fmt.Errorf("--tls-cert-file and --tls-private-key-file are required")
	}
	if err := kp.Load(); err != nil {
		return err
	}
	cfg.ServingCertificate = kp.GetCertificate
	if cfg.NodeCAs, err = loadPool(nodeCA, "--node-client-ca-file"); err != nil {
		return err
	}
	if cfg.ConnectAddress != "" {
		if cfg.ConnectClientCAs, err = loadPool(connectCA, "--connect-client-ca-file"); err != nil {
			return err
		}
		cfg.ConnectClientNames, cfg.KubeletClientNames = names(clientNames), names(kubeletClients)
	}
	if cfg.PeerAddress != "" {
		if peerCA == "" {
			peerCA = nodeCA
		}
		if cfg.PeerCAs, err = loadPool(peerCA, "--peer-ca-file"); err != nil {
			return err
		}
		cfg.PeerNames = names(peerNames)
		cfg.PeerCertificate = kp.GetClientCertificate
	}
	s, err := server.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		os.Exit(130)
	}()
	return s.Run(ctx)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}

func loadPool(path, flagName string) (*x509.CertPool, error) {
	if path == "" {
		return nil, fmt.Errorf("%s is required", flagName)
	}
	return pki.ReadPool(path)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// names splits a comma-separated list, dropping empty entries.
func names(list string) []string {
	var out []string
	for n := range strings.SplitSeq(list, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}
