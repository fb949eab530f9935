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
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"
)

// ClientUserPrefix starts the user name of every hub's credential,
// sitegrid-hub:<node> (the RBAC it is bound to: internal/rbac/hubrbac).
const ClientUserPrefix = "sitegrid-hub:"

// The pairs' names in the certificate directory: <prefix>-current.pem
// links to the newest, cert and key in one file, as the kubelet keeps
// kubelet-client-current.pem.
const (
	ClientPair  = "hub-client"
	ServingPair = "hub-serving"
)

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
	RenewalFailures map[string]Counter
}

// Certificates are the hub's certificates as they are now.
type Certificates struct {
	client, serving current
	// rotators renew (rotated pairs only).
	rotators []*rotator
}

type current interface{ Current() *tls.Certificate }

type static struct{ cert *tls.Certificate }

func (s static) Current() *tls.Certificate { return s.cert }

// New reads the certificates; with cfg.Dir it builds their renewal, which
// Start starts.
func New(cfg Config) (*Certificates, error) {
	c := &Certificates{}
	if cfg.Dir == "" {
		client, err := loadFiles(cfg.ClientCertFile, cfg.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("hub client certificate: %w", err)
		}
		serving, err := loadFiles(cfg.ServingCertFile, cfg.ServingKeyFile)
		if err != nil {
			return nil, fmt.Errorf("serving certificate: %w", err)
		}
		c.client, c.serving = static{client}, static{serving}
		return c, nil
	}
	client, err := newRotator(cfg, ClientPair, "client", ClientSigner, ClientUsages)
	if err != nil {
		return nil, err
	}
	serving, err := newRotator(cfg, ServingPair, "serving", ServingSigner, ServingUsages)
	if err != nil {
		return nil, err
	}
	// Both are asked for as the hub, with its current credential, as the
	// kubelet asks for its serving certificate as itself.
	renewalClient := func() (*Client, error) {
		endpoint, online := cfg.Online()
		if !online {
			return nil, errors.New("offline: no cloud apiserver to renew through; serving with the certificates the hub has")
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cfg.ServerCAs, MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return client.Current(), nil }},
			ForceAttemptHTTP2: true, IdleConnTimeout: time.Minute}
		return &Client{Server: endpoint, HTTP: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
	}
	client.client, serving.client = renewalClient, renewalClient
	c.client, c.serving = client, serving
	c.rotators = []*rotator{client, serving}
	return c, nil
}

func newRotator(cfg Config, pair, name, signer string, usages []string) (*rotator, error) {
	r := &rotator{name: name, store: NewStore(cfg.Dir, pair), signer: signer, usages: usages, failures: cfg.RenewalFailures[name]}
	cert, err := r.store.Current()
	if err != nil {
		return nil, fmt.Errorf("%s certificate: %w (a hub renews the certificates `sitegrid-hub join` obtained)", name, err)
	}
	r.current.Store(cert)
	return r, nil
}

func loadFiles(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	return parsePair(certPEM, keyPEM)
}

// Start renews the rotated pairs until ctx ends.
func (c *Certificates) Start(ctx context.Context) {
	for _, r := range c.rotators {
		go r.run(ctx)
	}
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

// PublicKeyPin is a CA certificate's pin as kubeadm writes it: "sha256:"
// and the hex SHA-256 of its DER SubjectPublicKeyInfo
// (--discovery-token-ca-cert-hash).
func PublicKeyPin(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}
