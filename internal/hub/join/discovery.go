package join

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/cluster-bootstrap/token/jws"

	"github.com/sitegrid/sitegrid/internal/hub/certs"
)

// discover learns the cluster CA as kubeadm join's token discovery does:
// it reads kube-public/cluster-info anonymously without trusting the
// server, checks the controller-manager's signature of it with the token
// (so a server that does not know the token cannot forge it), checks the
// CA's public key against a pin (so a server that knows the token cannot
// swap the CA), and reads it again verifying the server with that CA. It
// waits for the signature while the bootstrapsigner has not made it yet.
func discover(ctx context.Context, server, token string, pins []string, timeout time.Duration) (caPEM []byte, err error) {
	id, secret, _ := strings.Cut(token, ".")
	var kubeconfig string
	insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // #nosec G402 -- verified by the token's signature and the CA pin below
	var last error
	err = wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		cm, err := clusterInfo(ctx, insecure, server)
		if err != nil {
			last = err
			return false, nil
		}
		sig, ok := cm.Data[jwsKeyPrefix+id]
		if !ok {
			last = fmt.Errorf("cluster-info has no signature for token %s (yet): is the token valid and usable for signing?", id)
			return false, nil
		}
		kubeconfig = cm.Data[kubeconfigKey]
		if !jws.DetachedTokenIsValid(sig, kubeconfig, id, secret) {
			return false, fmt.Errorf("cluster-info at %s is not signed with this token: a wrong token, or not the cluster's apiserver", server)
		}
		return true, nil
	})
	if err != nil {
		if last != nil && !strings.Contains(err.Error(), "cluster-info") {
			err = fmt.Errorf("%w: %w", err, last)
		}
		return nil, fmt.Errorf("discovery at %s: %w", server, err)
	}
	cfg, err := clientcmd.Load([]byte(kubeconfig))
	if err != nil {
		return nil, fmt.Errorf("cluster-info's kubeconfig: %w", err)
	}
	if len(cfg.Clusters) != 1 {
		return nil, fmt.Errorf("cluster-info's kubeconfig names %d clusters, not one", len(cfg.Clusters))
	}
	for _, c := range cfg.Clusters {
		caPEM = c.CertificateAuthorityData
	}
	cas, err := certutil.ParseCertsPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("cluster-info's CA: %w", err)
	}
	if !slices.ContainsFunc(cas, func(ca *x509.Certificate) bool { return slices.Contains(pins, certs.PublicKeyPin(ca)) }) {
		return nil, fmt.Errorf("the cluster CA's public key (%s) matches no --discovery-token-ca-cert-hash", certs.PublicKeyPin(cas[0]))
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	verified := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	again, err := clusterInfo(ctx, verified, server)
	if err != nil {
		return nil, fmt.Errorf("%s with the discovered CA: %w", server, err)
	}
	if again.Data[kubeconfigKey] != kubeconfig {
		return nil, fmt.Errorf("%s answered cluster-info differently once verified", server)
	}
	return caPEM, nil
}

// configMap is what discovery reads of cluster-info.
type configMap struct {
	Data map[string]string `json:"data"`
}

// The names kubeadm and the bootstrapsigner give cluster-info's keys.
const (
	kubeconfigKey = "kubeconfig"
	jwsKeyPrefix  = "jws-kubeconfig-"
)

func clusterInfo(ctx context.Context, c *http.Client, server string) (*configMap, error) {
	var cm configMap
	if err := (&certs.Client{Server: server, HTTP: c}).Get(ctx, "/api/v1/namespaces/kube-public/configmaps/cluster-info", &cm); err != nil {
		return nil, fmt.Errorf("GET cluster-info: %w", err)
	}
	return &cm, nil
}
