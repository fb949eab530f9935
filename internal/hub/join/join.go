// Package join makes a node an edge node (`sitegrid-hub join`) and undoes
// it (`sitegrid-hub leave`): with a bootstrap token and the CA's pin it
// discovers the cluster CA, obtains the hub's client credential and serving
// certificate through CertificateSigningRequests (approved by
// sitegrid-manager, signed by the cluster's signers), writes the hub's
// configuration, points the kubelet's and kube-proxy's kubeconfigs at the
// hub with their own credentials kept, and keeps a backup of everything it
// changed, which leave restores. docs/hub.md, "Add an edge node".
package join

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/certificate/csr"
	"k8s.io/client-go/util/keyutil"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	"sigs.k8s.io/yaml"

	"github.com/sitegrid/sitegrid/internal/hub/certs"
	"github.com/sitegrid/sitegrid/internal/hub/config"
	"github.com/sitegrid/sitegrid/internal/rbac/hubrbac"
)

// Init is what starts the hub and restarts the node's components.
const (
	// InitSystemd installs sitegrid-hub.service, starts it and restarts
	// the kubelet (and kube-proxy) units.
	InitSystemd = "systemd"
	// InitNone writes every file and starts nothing: the caller is the
	// node's service manager (the lab is).
	InitNone = "none"
)

// Options of a join.
type Options struct {
	// Server is the cloud apiserver's URL as the node reaches it.
	Server string
	// Token is a bootstrap token bound to the node (jointoken).
	Token string
	// CACertHashes pin the cluster CA ("sha256:<hex>", jointoken.CAHash).
	CACertHashes []string
	NodeName     string
	// Root prefixes every path the join writes or backs up: "/" on a
	// machine (systemd's unit and the binary included).
	Root string
	// KubeletKubeconfig is the kubelet's kubeconfig (required);
	// KubeProxyKubeconfig kube-proxy's, if it runs from one.
	KubeletKubeconfig, KubeProxyKubeconfig string
	// Base is the hub configuration the join completes (listen address,
	// health, service topology...); its node, servers, CAs and
	// certificates are the join's.
	Base config.HubConfiguration
	Init string
	// RestartUnits are the systemd units pointed at the hub (InitSystemd).
	RestartUnits []string
	// Timeout bounds discovery and the wait for each certificate.
	Timeout time.Duration
	// Out receives what the join does, a line a step.
	Out io.Writer
}

// Paths under Root.
type layout struct{ root string }

func (l layout) path(p string) string        { return filepath.Join(l.root, p) }
func (l layout) config() string              { return l.path("/etc/sitegrid/hub.yaml") }
func (l layout) ca() string                  { return l.path("/etc/sitegrid/pki/ca.crt") }
func (l layout) state() string               { return l.path("/var/lib/sitegrid-hub") }
func (l layout) pki() string                 { return filepath.Join(l.state(), "pki") }
func (l layout) cache() string               { return filepath.Join(l.state(), "cache.db") }
func (l layout) record() string              { return filepath.Join(l.state(), "join", "record.json") }
func (l layout) backup(name string) string   { return filepath.Join(l.state(), "join", "backup", name) }
func (l layout) hubURL(listen string) string { return "https://" + config.Loopback(listen) }

func (o *Options) check() error {
	switch {
	case o.Server == "":
		return errors.New("join needs --server, the apiserver's URL")
	case !bootstraputil.IsValidBootstrapToken(o.Token):
		return errors.New("--token is not a bootstrap token (abcdef.0123456789abcdef)")
	case len(o.CACertHashes) == 0:
		return errors.New("join needs --discovery-token-ca-cert-hash: the node must not trust an unpinned CA")
	case o.NodeName == "":
		return errors.New("join needs --node-name")
	case o.KubeletKubeconfig == "":
		return errors.New("join needs the kubelet's kubeconfig")
	case o.Init != InitSystemd && o.Init != InitNone:
		return fmt.Errorf("--init %q: systemd or none", o.Init)
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	return nil
}

// Join makes the node an edge node. A failed join leaves the node's
// kubeconfigs as they were.
func Join(ctx context.Context, o Options) error {
	if err := o.check(); err != nil {
		return err
	}
	l := layout{o.Root}
	if _, err := os.Stat(l.record()); err == nil {
		return fmt.Errorf("node is joined already (%s): run sitegrid-hub leave first", l.record())
	}
	caPEM, err := discover(ctx, o.Server, o.Token, o.CACertHashes, o.Timeout)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "[discovery] cluster CA of %s matches the pin\n", o.Server)
	rec := &record{NodeName: o.NodeName, Init: o.Init}
	done := false
	defer func() {
		if !done {
			_ = rec.undo()
		}
	}()
	if err := rec.create(l.ca(), caPEM, 0o644); err != nil {
		return err
	}
	bootstrap, err := kubernetes.NewForConfig(&rest.Config{Host: o.Server, BearerToken: o.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}, UserAgent: "sitegrid-hub/join"})
	if err != nil {
		return err
	}
	if err := rec.mkdirAll(l.pki()); err != nil {
		return err
	}
	client, err := obtain(ctx, o, bootstrap, l.pki(), certs.ClientPair, &x509.CertificateRequest{Subject: pkix.Name{CommonName: hubrbac.User(o.NodeName)}},
		certificatesv1.KubeAPIServerClientSignerName, certs.ClientUsages)
	if err != nil {
		return err
	}
	asHub, err := kubernetes.NewForConfig(&rest.Config{Host: o.Server, UserAgent: "sitegrid-hub/join",
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM, CertData: client.cert, KeyData: client.key}})
	if err != nil {
		return err
	}
	node, err := asHub.CoreV1().Nodes().Get(ctx, o.NodeName, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsForbidden(err) {
			err = fmt.Errorf("%w (has an administrator run `sitegridctl node join-command %s`? it grants the hub's RBAC)", err, o.NodeName)
		}
		return fmt.Errorf("node %s: %w", o.NodeName, err)
	}
	dns, ips := servingNames(node)
	if _, err := obtain(ctx, o, asHub, l.pki(), certs.ServingPair, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + o.NodeName, Organization: []string{"system:nodes"}}, DNSNames: dns, IPAddresses: ips,
	}, certificatesv1.KubeletServingSignerName, certs.ServingUsages); err != nil {
		return err
	}
	cfg := hubConfig(o, l)
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := rec.create(l.config(), data, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "[config] %s\n", l.config())
	for _, kc := range []string{o.KubeletKubeconfig, o.KubeProxyKubeconfig} {
		if kc == "" {
			continue
		}
		if err := rec.pointAtHub(l, kc, l.hubURL(cfg.ListenAddress), caPEM); err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "[kubeconfig] %s points at %s (its credentials kept; backup in %s)\n", kc, l.hubURL(cfg.ListenAddress), filepath.Dir(l.backup("x")))
	}
	if err := rec.save(l.record()); err != nil {
		return err
	}
	if o.Init == InitSystemd {
		if err := installSystemd(ctx, l, rec, cfg, o.RestartUnits, o.Out); err != nil {
			return err
		}
		if err := rec.save(l.record()); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(o.Out, "[init] none: start `sitegrid-hub --config %s`, then restart the kubelet and kube-proxy\n", l.config())
	}
	done = true
	return nil
}

// hubConfig completes the base configuration with what the join obtained.
func hubConfig(o Options, l layout) config.HubConfiguration {
	cfg := o.Base
	cfg.TypeMeta = config.TypeMeta
	cfg.NodeName = o.NodeName
	cfg.Servers = []string{o.Server}
	cfg.ServerCAFile, cfg.ClientCAFile = l.ca(), l.ca()
	cfg.CertificateDirectory = l.pki()
	cfg.ClientCertFile, cfg.ClientKeyFile, cfg.ServingCertFile, cfg.ServingKeyFile = "", "", "", ""
	if cfg.CachePath == "" {
		cfg.CachePath = l.cache()
	}
	cfg.Defaults()
	return cfg
}

// servingNames are the node's names and addresses and loopback: where the
// node's components reach the hub.
func servingNames(node *corev1.Node) ([]string, []net.IP) {
	dns := []string{"localhost", node.Name}
	ips := []net.IP{net.ParseIP("127.0.0.1")}
	seen := map[string]bool{"localhost": true, node.Name: true, "127.0.0.1": true}
	for _, a := range node.Status.Addresses {
		if seen[a.Address] {
			continue
		}
		seen[a.Address] = true
		switch a.Type {
		case corev1.NodeInternalIP, corev1.NodeExternalIP:
			if ip := net.ParseIP(a.Address); ip != nil {
				ips = append(ips, ip)
			}
		case corev1.NodeHostName, corev1.NodeInternalDNS, corev1.NodeExternalDNS:
			dns = append(dns, a.Address)
		}
	}
	return dns, ips
}

// pair is a certificate and its key, PEM.
type pair struct{ cert, key []byte }

// obtain asks for a certificate through a CSR as client, waits until it
// is approved and signed, and stores it as pairName in dir.
func obtain(ctx context.Context, o Options, client kubernetes.Interface, dir, pairName string, template *x509.CertificateRequest,
	signer string, usages []certificatesv1.KeyUsage) (pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return pair{}, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, template, key)
	if err != nil {
		return pair{}, err
	}
	request := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	name, uid, err := csr.RequestCertificateWithContext(ctx, client, request, "", signer, nil, usages, key)
	if err != nil {
		return pair{}, fmt.Errorf("CSR for %s: %w", template.Subject.CommonName, err)
	}
	fmt.Fprintf(o.Out, "[csr] %s asks %s for %s\n", name, signer, template.Subject.CommonName)
	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	cert, err := csr.WaitForCertificate(wctx, client, name, uid)
	if err != nil {
		return pair{}, fmt.Errorf("CSR %s (%s) got no certificate within %s: %w; sitegrid-manager approves a hub's CSR only from the node's join token or its own identity, for the node's own names (kubectl describe csr %s shows why not)",
			name, template.Subject.CommonName, o.Timeout, err, name)
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return pair{}, err
	}
	store, err := certs.Store(dir, pairName)
	if err != nil {
		return pair{}, err
	}
	if _, err := store.Update(cert, keyPEM); err != nil {
		return pair{}, err
	}
	fmt.Fprintf(o.Out, "[csr] %s approved and signed\n", name)
	return pair{cert: cert, key: keyPEM}, nil
}
