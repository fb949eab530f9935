package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/sitegrid/sitegrid/internal/atomicfile"
	"github.com/sitegrid/sitegrid/internal/lab/netns"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/process"
)

// A real node of a lab started with --superedge-agents boots on SuperEdge's
// edge agent, built from its module (kubebin.SuperEdge), as a SuperEdge edge
// node does: lite-apiserver caches the cloud for the node's kubelet,
// kube-proxy and DNS. `lab join` then replaces it with sitegrid-hub, node by
// node, without a pod restarting (docs/migrate-from-superedge.md, step 5);
// `lab leave` goes back to it.
//
// SuperEdge's other edge agent, application-grid-wrapper, is not run: its
// v0.9.0 cannot serve today's clients. It answers only GET of one node,
// while kube-proxy v1.37 and CoreDNS list and watch nodes ("the server
// could not find the requested resource (get nodes)"), and it answers a
// list of EndpointSlices with Endpoints, which CoreDNS refuses. Through it
// kube-proxy never becomes healthy. The topologyKeys filtering it did for
// kube-proxy is the hub's (docs/hub.md, "Service topology").

// lite-apiserver listens on the node at SuperEdge's own port.
const liteAPIServerAddr = "127.0.0.1:51003"

// superEdgeOptions are the agents' binaries; empty when the lab's nodes
// boot joined to the hub.
type superEdgeOptions struct {
	liteAPIServerBin string
}

func (o superEdgeOptions) enabled() bool { return o.liteAPIServerBin != "" }

// superEdgeFiles are a node's agents' configuration (setUpSuperEdge).
type superEdgeFiles struct {
	dir                     string
	servingCert, servingKey string
	tlsConfig               string
}

// setUpSuperEdge writes what lite-apiserver runs with and points the
// kubelet's, kube-proxy's and DNS's kubeconfigs at it, as SuperEdge's
// edgeadm does, each with its own credential. lite-apiserver forwards a
// certificate client's requests with the certificate of the same name from
// its tls config (the kubelet's own), and a token client's as they come.
func (e *edge) setUpSuperEdge(en *edgeNode) error {
	f := &superEdgeFiles{dir: filepath.Join(en.dir, "superedge")}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	serving, err := e.cp.IssueCert(pki.LeafRequest{CommonName: "lite-apiserver", IPs: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}, Server: true})
	if err != nil {
		return err
	}
	if f.servingCert, f.servingKey, err = pki.WriteKeyPair(f.dir, "lite-apiserver", serving.Cert, serving.Key); err != nil {
		return err
	}
	kubelet, err := clientcmd.LoadFromFile(en.kubeletConfig)
	if err != nil {
		return err
	}
	auth := kubelet.AuthInfos[kubelet.Contexts[kubelet.CurrentContext].AuthInfo]
	certFile, keyFile := filepath.Join(f.dir, "kubelet-client.crt"), filepath.Join(f.dir, "kubelet-client.key")
	if err := errors.Join(atomicfile.Write(certFile, auth.ClientCertificateData, 0o600), atomicfile.Write(keyFile, auth.ClientKeyData, 0o600)); err != nil {
		return err
	}
	tlsConfig, err := json.Marshal([]map[string]string{{"cert": certFile, "key": keyFile}})
	if err != nil {
		return err
	}
	f.tlsConfig = filepath.Join(f.dir, "tls.json")
	if err := atomicfile.Write(f.tlsConfig, tlsConfig, 0o600); err != nil {
		return err
	}
	for _, kubeconfig := range []string{en.kubeletConfig, en.kubeProxyKubeconfig, en.real.dnsKubeconfig} {
		if err := pointKubeconfig(kubeconfig, "https://"+liteAPIServerAddr); err != nil {
			return err
		}
	}
	en.real.superEdge = f
	return nil
}

// bootSuperEdge puts a registered real node on SuperEdge's agent: it
// starts, then the kubelet restarts through lite-apiserver, and kube-proxy
// and the DNS start.
func (e *edge) bootSuperEdge(ctx context.Context, en *edgeNode) error {
	if err := e.setUpSuperEdge(en); err != nil {
		return err
	}
	if err := e.startSuperEdge(ctx, en); err != nil {
		return err
	}
	return e.restartNodeComponents(ctx, en)
}

// pointKubeconfig sets the server of kubeconfig's current cluster.
func pointKubeconfig(path, server string) error {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return err
	}
	cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster].Server = server
	return clientcmd.WriteToFile(*cfg, path)
}

// startSuperEdge starts lite-apiserver in the node's namespace; it is
// ready when it answers through to the cloud.
func (e *edge) startSuperEdge(ctx context.Context, en *edgeNode) error {
	f := en.real.superEdge
	host, port, _ := net.SplitHostPort(en.link.Addr())
	_, litePort, _ := net.SplitHostPort(liteAPIServerAddr)
	ca, err := os.ReadFile(e.cp.CAFile)
	if err != nil {
		return err
	}
	lite, err := process.Start(process.Spec{Name: "lite-apiserver-" + en.name, Path: "ip",
		Args: netns.CommandArgs(en.netns, e.superEdge.liteAPIServerBin,
			"--ca-file="+e.cp.CAFile, "--tls-cert-file="+f.servingCert, "--tls-private-key-file="+f.servingKey,
			"--kube-apiserver-url="+host, "--kube-apiserver-port="+port, "--apiserver-ca-file="+e.cp.CAFile,
			"--port="+litePort, "--tls-config-file="+f.tlsConfig, "--file-cache-path="+filepath.Join(f.dir, "cache"), "--v=2"),
		LogFile: filepath.Join(en.dir, "lite-apiserver.log")})
	if err != nil {
		return err
	}
	return en.adopt(ctx, lite, process.HTTPReady(en.netnsTLSClient(ca), "https://"+liteAPIServerAddr+"/readyz"), &en.liteAPIServer)
}

// Through lite-apiserver (v0.9.0) the first event of client-go's streaming
// initial list (WatchListClient, on by default in client-go v0.37) never
// arrives, and a reflector waits for it ("awaiting required bookmark event
// for initial events stream") instead of listing. So the node's components
// run with it off while they read through lite-apiserver: the DNS by
// client-go's environment, the kubelet and kube-proxy by their feature
// gates, which replace client-go's (kube-proxy's in its configuration,
// kubeproxy.go).
const watchListClient = "WatchListClient"

// superEdgeClientEnv is the DNS's environment (watchListClient).
func (en *edgeNode) superEdgeClientEnv() []string {
	if !en.runsSuperEdge() {
		return nil
	}
	return []string{"KUBE_FEATURE_" + watchListClient + "=false"}
}

// superEdgeFeatureGates is the kubelet's flags (watchListClient).
func (en *edgeNode) superEdgeFeatureGates() []string {
	if !en.runsSuperEdge() {
		return nil
	}
	return []string{"--feature-gates=" + watchListClient + "=false"}
}

// netnsTLSClient dials from inside the node's namespace and verifies the
// server by the cluster CA.
func (en *edgeNode) netnsTLSClient(caPEM []byte) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c := en.netnsClient()
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return c
}

// stopSuperEdge stops the node's lite-apiserver; the supervisor leaves it
// stopped.
func (en *edgeNode) stopSuperEdge() {
	en.mu.Lock()
	p := en.liteAPIServer
	en.liteAPIServer = nil
	en.mu.Unlock()
	if p != nil {
		p.Stop(10 * time.Second)
	}
}

// runsSuperEdge: the node is on SuperEdge's agents (not joined to its
// hub).
func (en *edgeNode) runsSuperEdge() bool {
	en.mu.Lock()
	defer en.mu.Unlock()
	return en.real != nil && en.real.superEdge != nil && !en.real.joined
}

// superEdgeAgentState is what `lab status` shows of a node's agent.
func (en *edgeNode) superEdgeAgentState() string {
	en.mu.Lock()
	defer en.mu.Unlock()
	if en.real == nil || en.real.superEdge == nil {
		return ""
	}
	if en.real.joined {
		return "replaced by sitegrid-hub"
	}
	if en.liteAPIServer == nil {
		return "stopped"
	}
	return "running"
}
