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
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/sitegrid/sitegrid/internal/hub/certs"
	"github.com/sitegrid/sitegrid/internal/hub/config"
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
	// CACertHashes pin the cluster CA ("sha256:<hex>", certs.PublicKeyPin).
	CACertHashes []string
	NodeName     string
	// Root prefixes every path the join writes or backs up: "/" on a
	// machine (systemd's unit and the binary included).
	Root string
	// KubeletKubeconfig is the kubelet's kubeconfig (required);
	// KubeProxyKubeconfig kube-proxy's, if it runs from one.
	KubeletKubeconfig, KubeProxyKubeconfig string
	// ComponentKubeconfigs are other node components' kubeconfigs (the
	// node's DNS...), pointed at the hub the same way.
	ComponentKubeconfigs []string
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

// tokenPattern is a bootstrap token's form (k8s.io/cluster-bootstrap's
// BootstrapTokenPattern; that package links core/v1 into the hub).
var tokenPattern = regexp.MustCompile(`\A([a-z0-9]{6})\.([a-z0-9]{16})\z`)

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
	case !tokenPattern.MatchString(o.Token):
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
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	verified := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	if err := rec.mkdirAll(l.pki()); err != nil {
		return err
	}
	bootstrap := &certs.Client{Server: o.Server, HTTP: verified, Token: o.Token}
	client, err := obtain(ctx, o, bootstrap, certs.NewStore(l.pki(), certs.ClientPair), &x509.CertificateRequest{Subject: pkix.Name{CommonName: certs.ClientUserPrefix + o.NodeName}},
		certs.ClientSigner, certs.ClientUsages)
	if err != nil {
		return err
	}
	asHub := &certs.Client{Server: o.Server, HTTP: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{*client}, MinVersion: tls.VersionTLS12}}}}
	var node nodeAddresses
	if err := asHub.Get(ctx, "/api/v1/nodes/"+o.NodeName, &node); err != nil {
		var status *certs.StatusError
		if errors.As(err, &status) && status.Code == http.StatusForbidden {
			err = fmt.Errorf("%w (has an administrator run `sitegridctl node join-command %s`? it grants the hub's RBAC)", err, o.NodeName)
		}
		return fmt.Errorf("node %s: %w", o.NodeName, err)
	}
	dns, ips := certs.ServingNames(o.NodeName, node.Status.Addresses)
	if _, err := obtain(ctx, o, asHub, certs.NewStore(l.pki(), certs.ServingPair), &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + o.NodeName, Organization: []string{"system:nodes"}}, DNSNames: dns, IPAddresses: ips,
	}, certs.ServingSigner, certs.ServingUsages); err != nil {
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
	for _, kc := range append([]string{o.KubeletKubeconfig, o.KubeProxyKubeconfig}, o.ComponentKubeconfigs...) {
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

// nodeAddresses is what the join reads of its Node.
type nodeAddresses struct {
	Status struct {
		Addresses []certs.NodeAddress `json:"addresses"`
	} `json:"status"`
}

// obtain asks for a certificate through a CSR as client, waits until it is
// approved and signed, and keeps it in store.
func obtain(ctx context.Context, o Options, client *certs.Client, store certs.Store, template *x509.CertificateRequest,
	signer string, usages []string) (*tls.Certificate, error) {
	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	fmt.Fprintf(o.Out, "[csr] asking %s for %s\n", signer, template.Subject.CommonName)
	name, certPEM, keyPEM, err := client.Request(wctx, template, signer, usages)
	if err != nil {
		return nil, fmt.Errorf("%w; sitegrid-manager approves a hub's CSR only from the node's join token or its own identity, for the node's own names (kubectl describe csr %s shows why not)",
			err, name)
	}
	cert, err := store.Update(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Out, "[csr] %s approved and signed\n", name)
	return cert, nil
}
