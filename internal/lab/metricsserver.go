package lab

import (
	"context"
	"crypto/tls"
	_ "embed"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing/fstest"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/process"
)

// The lab's metrics-server, for `kubectl top` (docs/tunnel.md): a cloud
// component, run beside the control plane, that scrapes every node's
// kubelet with the tunnel's TCP endpoint as its HTTPS proxy. Its client
// certificate (user metrics-server) is what the apiserver, the tunnel and
// the kubelets authenticate; the tunnel lets that name reach kubelets only.
const (
	metricsServerUser = "metrics-server"
	// metricsServerService is the Service its APIService names.
	metricsServerService = "metrics-server.kube-system.svc"
)

//go:embed metrics-server.yaml
var metricsServerManifest []byte

// startMetricsServer runs metrics-server with proxy (host:port of the
// tunnel's TCP endpoint) as its HTTPS proxy, and registers it as the
// metrics.k8s.io API.
func startMetricsServer(ctx context.Context, cp *controlplane.ControlPlane, bin, proxy string) (*process.Process, error) {
	dir := filepath.Join(cp.Dir, "metrics-server")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	kc, err := cp.WriteKubeconfig("metrics-server", metricsServerUser)
	if err != nil {
		return nil, err
	}
	client, err := cp.IssueCert(pki.LeafRequest{CommonName: metricsServerUser, Client: true})
	if err != nil {
		return nil, err
	}
	clientCert, clientKey, err := pki.WriteKeyPair(dir, "kubelet-client", client.Cert, client.Key)
	if err != nil {
		return nil, err
	}
	serving, err := cp.IssueCert(pki.LeafRequest{CommonName: metricsServerService, DNSNames: []string{metricsServerService, "localhost"},
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	if err != nil {
		return nil, err
	}
	servingCert, servingKey, err := pki.WriteKeyPair(dir, "serving", serving.Cert, serving.Key)
	if err != nil {
		return nil, err
	}
	port, err := controlplane.FreePort()
	if err != nil {
		return nil, err
	}
	// Its permissions first: it reads the apiserver's front-proxy CA as it
	// starts.
	if err := registerMetricsAPI(ctx, cp, port); err != nil {
		return nil, err
	}
	p, err := process.Start(process.Spec{Name: "metrics-server", Path: bin, LogFile: filepath.Join(cp.Dir, "logs", "metrics-server.log"),
		// Loopback (the apiserver) is never proxied; node names are.
		Env: []string{"HTTPS_PROXY=https://" + proxy, "NO_PROXY="},
		Args: []string{
			"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
			"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
			"--tls-cert-file=" + servingCert, "--tls-private-key-file=" + servingKey,
			// By name, as the apiserver dials nodes: the tunnel routes by node.
			"--kubelet-preferred-address-types=Hostname", "--kubelet-use-node-status-port",
			"--kubelet-certificate-authority=" + cp.CAFile,
			"--kubelet-client-certificate=" + clientCert, "--kubelet-client-key=" + clientKey,
			"--metric-resolution=15s",
		}})
	if err != nil {
		return nil, err
	}
	if err := waitLive(ctx, cp, p, port); err != nil {
		p.Stop(10 * time.Second)
		return nil, err
	}
	return p, nil
}

// waitLive waits for metrics-server's /livez, not /readyz: it is ready once
// it has scraped a node, and the nodes come later.
func waitLive(ctx context.Context, cp *controlplane.ControlPlane, p *process.Process, port int) error {
	ca, err := pki.ReadPool(cp.CAFile)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca}}}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := p.WaitReady(wctx, 200*time.Millisecond, process.HTTPReady(hc, fmt.Sprintf("https://127.0.0.1:%d/livez", port))); err != nil {
		return fmt.Errorf("metrics-server did not become live (%w):\n%s", err, process.LogTail(p.Spec.LogFile, 15))
	}
	return nil
}

// registerMetricsAPI installs metrics-server's RBAC and Service and its
// APIService, v1beta1.metrics.k8s.io, verified by the cluster CA.
func registerMetricsAPI(ctx context.Context, cp *controlplane.ControlPlane, port int) error {
	caPEM, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return err
	}
	apiService, err := yaml.Marshal(map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1beta1.metrics.k8s.io"},
		"spec": map[string]any{
			"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
			"service":  map[string]any{"name": "metrics-server", "namespace": "kube-system", "port": port},
			"caBundle": caPEM,
		},
	})
	if err != nil {
		return err
	}
	return InstallManifests(ctx, cp.RESTConfig(), fstest.MapFS{
		"metrics-server.yaml": {Data: metricsServerManifest},
		"apiservice.yaml":     {Data: apiService},
	})
}
