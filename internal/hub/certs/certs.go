// Package certs holds the hub's two certificates: its client credential
// (user sitegrid-hub:<node>) and its serving certificate (the node's
// kubelet-serving identity, system:node:<node>). Either they are files an
// installer placed, read once, or — after `sitegrid-hub join` — pairs in a
// directory that client-go's certificate manager renews through
// CertificateSigningRequests at 70–90 % of their lifetime, as the kubelet
// renews its own. Renewal needs the cloud; offline the hub keeps serving
// with the certificates it has and retries with backoff.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/certificate"
)

// The pairs' names in the certificate directory: <prefix>-current.pem
// links to the newest, cert and key in one file, as the kubelet keeps
// kubelet-client-current.pem.
const (
	ClientPair  = "hub-client"
	ServingPair = "hub-serving"
)

// Usages the hub asks for: ECDSA keys (client-go's default), so no key
// encipherment.
var (
	ClientUsages  = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
	ServingUsages = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
)

// Store is the file store of one pair in dir.
func Store(dir, pair string) (certificate.Store, error) {
	return certificate.NewFileStore(pair, dir, dir, "", "")
}

// Config says where the certificates are and how to reach the cloud.
type Config struct {
	// Dir, when set, holds rotated pairs (ClientPair, ServingPair); else
	// the four files are read once.
	Dir                             string
	ClientCertFile, ClientKeyFile   string
	ServingCertFile, ServingKeyFile string
	// ServerCAs verify the apiservers renewals go to.
	ServerCAs *x509.CertPool
	// Online names the apiserver to renew through, if one is reachable.
	Online func() (string, bool)
	// RenewalFailures, when set, count failed renewals by "client" and
	// "serving" (the hub's metrics).
	RenewalFailures map[string]certificate.Counter
}

// Certificates are the hub's certificates as they are now.
type Certificates struct {
	client, serving current
	// managers renew (rotated pairs only).
	managers []certificate.Manager
}

type current interface{ Current() *tls.Certificate }

type static struct{ cert *tls.Certificate }

func (s static) Current() *tls.Certificate { return s.cert }

// New reads the certificates; with cfg.Dir it builds their renewal, which
// Start starts.
func New(cfg Config) (*Certificates, error) {
	c := &Certificates{}
	if cfg.Dir == "" {
		client, err := tls.LoadX509KeyPair(cfg.ClientCertFile, cfg.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("hub client certificate: %w", err)
		}
		serving, err := tls.LoadX509KeyPair(cfg.ServingCertFile, cfg.ServingKeyFile)
		if err != nil {
			return nil, fmt.Errorf("serving certificate: %w", err)
		}
		for _, cert := range []*tls.Certificate{&client, &serving} {
			if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				return nil, err
			}
		}
		c.client, c.serving = static{&client}, static{&serving}
		return c, nil
	}
	client, err := c.rotated(cfg, ClientPair, "client", ClientUsages, certificatesv1.KubeAPIServerClientSignerName,
		func(cur *tls.Certificate) (kubernetes.Interface, error) { return renewalClient(cfg, cur) })
	if err != nil {
		return nil, err
	}
	c.client = client
	serving, err := c.rotated(cfg, ServingPair, "serving", ServingUsages, certificatesv1.KubeletServingSignerName,
		// The serving certificate is asked for as the hub, like the
		// kubelet asks for its own serving certificate as itself.
		func(*tls.Certificate) (kubernetes.Interface, error) { return renewalClient(cfg, client.Current()) })
	if err != nil {
		return nil, err
	}
	c.serving = serving
	return c, nil
}

// rotated is the certificate manager of one pair: it asks for the names
// the pair holds now (the join chose them) under the same signer.
func (c *Certificates) rotated(cfg Config, pair, name string, usages []certificatesv1.KeyUsage, signer string,
	clientFn certificate.ClientsetFunc) (certificate.Manager, error) {
	store, err := Store(cfg.Dir, pair)
	if err != nil {
		return nil, err
	}
	now, err := store.Current()
	if err != nil {
		return nil, fmt.Errorf("%s certificate in %s: %w (a hub renews the certificates `sitegrid-hub join` obtained)", name, cfg.Dir, err)
	}
	leaf := now.Leaf
	template := &x509.CertificateRequest{Subject: leaf.Subject, DNSNames: leaf.DNSNames, IPAddresses: leaf.IPAddresses}
	template.Subject.Names, template.Subject.ExtraNames = nil, nil
	m, err := certificate.NewManager(&certificate.Config{
		Name: "sitegrid-hub " + name, ClientsetFn: clientFn, Template: template, SignerName: signer, Usages: usages,
		CertificateStore: store, CertificateRenewFailure: cfg.RenewalFailures[name],
	})
	if err != nil {
		return nil, err
	}
	c.managers = append(c.managers, m)
	return m, nil
}

// renewalClient reaches the cloud apiserver the hub is online with, as the
// hub (cur): offline there is none, and the manager tries again later.
func renewalClient(cfg Config, cur *tls.Certificate) (kubernetes.Interface, error) {
	endpoint, online := cfg.Online()
	if !online {
		return nil, errors.New("offline: no cloud apiserver to renew through; serving with the certificates the hub has")
	}
	if cur == nil {
		return nil, errors.New("no client certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cfg.ServerCAs, Certificates: []tls.Certificate{*cur}, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true, IdleConnTimeout: time.Minute}
	return kubernetes.NewForConfig(&rest.Config{Host: endpoint, Transport: tr, UserAgent: "sitegrid-hub/certificates", Timeout: 30 * time.Second})
}

// Start renews the rotated pairs until ctx ends.
func (c *Certificates) Start(ctx context.Context) {
	for _, m := range c.managers {
		m.Start()
	}
	go func() {
		<-ctx.Done()
		for _, m := range c.managers {
			m.Stop()
		}
	}()
}

// GetClientCertificate hands every new connection to the cloud the
// current credential; open connections keep theirs.
func (c *Certificates) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if cert := c.client.Current(); cert != nil {
		return cert, nil
	}
	return nil, errors.New("the hub has no client certificate")
}

// GetCertificate serves every new connection of the node's components
// with the current serving certificate.
func (c *Certificates) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if cert := c.serving.Current(); cert != nil {
		return cert, nil
	}
	return nil, errors.New("the hub has no serving certificate")
}

// Self is the user name of the hub's credential.
func (c *Certificates) Self() string { return c.client.Current().Leaf.Subject.CommonName }

// Expiry is when the certificate named "client" or "serving" expires.
func (c *Certificates) Expiry(name string) time.Time {
	cur := c.client
	if name == "serving" {
		cur = c.serving
	}
	if cert := cur.Current(); cert != nil && cert.Leaf != nil {
		return cert.Leaf.NotAfter
	}
	return time.Time{}
}
