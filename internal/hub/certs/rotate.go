package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// rotator renews one pair before it expires: at a point drawn between 70
// and 90 % of the certificate's lifetime (as the kubelet's certificate
// manager draws it, so a fleet does not renew at once), through a CSR with
// the same names, and again with backoff while that fails.
type rotator struct {
	name     string
	store    Store
	signer   string
	usages   []string
	current  atomic.Pointer[tls.Certificate]
	client   func() (*Client, error)
	failures Counter
}

// Counter counts failed renewals.
type Counter interface{ Inc() }

func (r *rotator) Current() *tls.Certificate { return r.current.Load() }

// deadline is when cert is renewed.
func deadline(cert *x509.Certificate, jitter float64) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(life/10*7 + time.Duration(float64(life/5)*jitter))
}

// run renews the pair until ctx ends.
func (r *rotator) run(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		wait := time.Until(deadline(r.Current().Leaf, rand.Float64()))
		if backoff > 0 {
			wait = backoff
		}
		klog.V(2).InfoS("certificate renewal planned", "certificate", r.name, "expires", r.Current().Leaf.NotAfter, "in", wait.Round(time.Second))
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
		if err := r.renew(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			if r.failures != nil {
				r.failures.Inc()
			}
			backoff = min(max(2*backoff, 2*time.Second), 5*time.Minute)
			backoff += time.Duration(rand.Int64N(int64(backoff / 5)))
			klog.InfoS("certificate renewal failed; the current one serves meanwhile", "certificate", r.name,
				"expires", r.Current().Leaf.NotAfter, "retryIn", backoff.Round(time.Second), "err", err)
			continue
		}
		backoff = 0
	}
}

func (r *rotator) renew(ctx context.Context) error {
	c, err := r.client()
	if err != nil {
		return err
	}
	leaf := r.Current().Leaf
	template := &x509.CertificateRequest{Subject: leaf.Subject, DNSNames: leaf.DNSNames, IPAddresses: leaf.IPAddresses}
	template.Subject.Names = nil
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	name, certPEM, keyPEM, err := c.Request(rctx, template, r.signer, r.usages)
	if err != nil {
		return err
	}
	cert, err := r.store.Update(certPEM, keyPEM)
	if err != nil {
		return err
	}
	r.current.Store(cert)
	klog.InfoS("certificate renewed", "certificate", r.name, "csr", name, "expires", cert.Leaf.NotAfter)
	return nil
}
