package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"k8s.io/client-go/util/keyutil"
)

// The hub asks for certificates through the certificates.k8s.io/v1 API
// with a client of its own: client-go's typed clients and certificate
// manager would link core/v1's types into the hub (its memory budget,
// docs/hub.md), for two requests and one poll.

// Signers and usages of the hub's certificates (ECDSA keys, so no key
// encipherment).
const (
	ClientSigner  = "kubernetes.io/kube-apiserver-client"
	ServingSigner = "kubernetes.io/kubelet-serving"
)

var (
	ClientUsages  = []string{"digital signature", "client auth"}
	ServingUsages = []string{"digital signature", "server auth"}
)

// Client reaches an apiserver to ask for certificates.
type Client struct {
	// Server is the apiserver's URL.
	Server string
	// HTTP carries the TLS settings (and a client certificate, if the
	// requester is one).
	HTTP *http.Client
	// Token, if set, is the requester's bearer token (a join token).
	Token string
	// Poll is how often a pending request is checked (default 1s).
	Poll time.Duration
}

// csr is the part of a CertificateSigningRequest the hub reads and writes.
type csr struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Metadata   struct {
		Name         string `json:"name,omitempty"`
		GenerateName string `json:"generateName,omitempty"`
		UID          string `json:"uid,omitempty"`
	} `json:"metadata"`
	Spec struct {
		Request    []byte   `json:"request"`
		SignerName string   `json:"signerName"`
		Usages     []string `json:"usages"`
	} `json:"spec"`
	Status struct {
		Certificate []byte `json:"certificate,omitempty"`
		Conditions  []struct {
			Type    string `json:"type"`
			Reason  string `json:"reason,omitempty"`
			Message string `json:"message,omitempty"`
		} `json:"conditions,omitempty"`
	} `json:"status"`
}

const csrPath = "/apis/certificates.k8s.io/v1/certificatesigningrequests"

// Request asks signer for a certificate of template with a new ECDSA
// P-256 key and waits until it is issued (or denied, failed, or ctx ends).
// It returns the CSR's name and the certificate and key, PEM.
func (c *Client) Request(ctx context.Context, template *x509.CertificateRequest, signer string, usages []string) (name string, certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, template, key)
	if err != nil {
		return "", nil, nil, err
	}
	var req csr
	req.APIVersion, req.Kind = "certificates.k8s.io/v1", "CertificateSigningRequest"
	req.Metadata.GenerateName = "csr-"
	req.Spec.Request = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	req.Spec.SignerName, req.Spec.Usages = signer, usages
	var created csr
	if err := c.do(ctx, http.MethodPost, csrPath, req, &created); err != nil {
		return "", nil, nil, fmt.Errorf("create a CSR for %s: %w", template.Subject.CommonName, err)
	}
	name = created.Metadata.Name
	if keyPEM, err = keyutil.MarshalPrivateKeyToPEM(key); err != nil {
		return name, nil, nil, err
	}
	poll := c.Poll
	if poll == 0 {
		poll = time.Second
	}
	for {
		var got csr
		if err := c.do(ctx, http.MethodGet, csrPath+"/"+name, nil, &got); err != nil {
			return name, nil, nil, fmt.Errorf("CSR %s: %w", name, err)
		}
		if got.Metadata.UID != created.Metadata.UID {
			return name, nil, nil, fmt.Errorf("CSR %s was replaced by another of the same name", name)
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == "Denied" || cond.Type == "Failed" {
				return name, nil, nil, fmt.Errorf("CSR %s %s: %s %s", name, strings.ToLower(cond.Type), cond.Reason, cond.Message)
			}
		}
		if len(got.Status.Certificate) > 0 {
			return name, got.Status.Certificate, keyPEM, nil
		}
		select {
		case <-ctx.Done():
			return name, nil, nil, fmt.Errorf("CSR %s not issued: %w", name, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// Get reads path on the apiserver as JSON into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.Server, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "sitegrid-hub/certificates")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var status struct {
			Message string `json:"message"`
			Reason  string `json:"reason"`
		}
		if json.Unmarshal(data, &status) == nil && status.Message != "" {
			return &StatusError{Code: resp.StatusCode, Reason: status.Reason, Message: status.Message}
		}
		return &StatusError{Code: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	}
	return json.Unmarshal(data, out)
}

// StatusError is an apiserver's refusal.
type StatusError struct {
	Code            int
	Reason, Message string
}

func (e *StatusError) Error() string { return fmt.Sprintf("%d %s: %s", e.Code, e.Reason, e.Message) }
