package controlplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/process"
)

// etcdPKI is etcd's own certificate authority and the certificates made
// from it, laid out as kubeadm does (pki/etcd/...): etcd trusts only its
// CA, so a certificate of the cluster CA (a kubelet's, a hub's) cannot
// reach etcd, and only the apiserver holds an etcd client certificate.
type etcdPKI struct {
	ca                                      string
	serverCert, serverKey                   string
	peerCert, peerKey                       string
	apiserverClientCert, apiserverClientKey string
}

func writeEtcdPKI(pkiDir string) (etcdPKI, error) {
	var p etcdPKI
	dir := filepath.Join(pkiDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, err
	}
	ca, err := pki.NewCA("etcd-ca", 10*365*24*time.Hour)
	if err != nil {
		return p, err
	}
	if p.ca, _, err = pki.WriteKeyPair(dir, "ca", ca.Cert, ca.Key); err != nil {
		return p, err
	}
	loopback := []net.IP{net.ParseIP("127.0.0.1")}
	year := 365 * 24 * time.Hour
	issue := func(dir, name string, req pki.LeafRequest) (cert, key string, err error) {
		req.Validity = year
		kp, err := ca.Issue(req)
		if err != nil {
			return "", "", err
		}
		return pki.WriteKeyPair(dir, name, kp.Cert, kp.Key)
	}
	if p.serverCert, p.serverKey, err = issue(dir, "server", pki.LeafRequest{CommonName: "etcd-server", DNSNames: []string{"localhost"}, IPs: loopback, Server: true, Client: true}); err != nil {
		return p, err
	}
	if p.peerCert, p.peerKey, err = issue(dir, "peer", pki.LeafRequest{CommonName: "etcd-peer", DNSNames: []string{"localhost"}, IPs: loopback, Server: true, Client: true}); err != nil {
		return p, err
	}
	p.apiserverClientCert, p.apiserverClientKey, err = issue(pkiDir, "apiserver-etcd-client", pki.LeafRequest{CommonName: "kube-apiserver-etcd-client", Client: true})
	return p, err
}

// startEtcd runs etcd as kubeadm's static pod does: client and peer
// traffic over TLS with client certificates required, on loopback only,
// and an unauthenticated plain-HTTP listener for /health and /metrics
// only (the liveness probe's port).
func (cp *ControlPlane) startEtcd(ctx context.Context, cfg Config, p etcdPKI, progress io.Writer) error {
	var ports [3]int
	for i := range ports {
		port, err := FreePort()
		if err != nil {
			return err
		}
		ports[i] = port
	}
	clientURL := fmt.Sprintf("https://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("https://127.0.0.1:%d", ports[1])
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d", ports[2])
	proc, err := cp.run(process.Spec{Name: Etcd, Path: cfg.Bin.Path(kubebin.Etcd), Args: []string{
		"--name=sitegrid", "--data-dir=" + filepath.Join(cp.Dir, "etcd"),
		"--listen-client-urls=" + clientURL, "--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=sitegrid=" + peerURL,
		"--listen-metrics-urls=" + metricsURL,
		"--client-cert-auth=true", "--trusted-ca-file=" + p.ca,
		"--cert-file=" + p.serverCert, "--key-file=" + p.serverKey,
		"--peer-client-cert-auth=true", "--peer-trusted-ca-file=" + p.ca,
		"--peer-cert-file=" + p.peerCert, "--peer-key-file=" + p.peerKey,
		// The lab and tests are disposable: skipping fsync makes a 2-core
		// machine several times faster and risks only their own data.
		"--unsafe-no-fsync=true", "--quota-backend-bytes=8589934592",
		"--log-level=warn",
	}}, ports[0], progress)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	return waitReady(ctx, proc, process.HTTPReady(hc, metricsURL+"/health"))
}
