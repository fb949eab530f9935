package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"
)

// forwardedHeader marks a CONNECT one replica forwards to the replica
// holding the node's session; that replica serves it from its own
// sessions only, so a request is forwarded once at most.
const forwardedHeader = "Sitegrid-Tunnel-Forwarded-By"

// peerHandler serves the CONNECTs other replicas forward.
type peerHandler struct{ s *Server }

func (p peerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.s.serveConnect(w, r, true)
}

// peerTLS verifies a replica's certificate by chain and common name only:
// replicas share one certificate, which names none of their pod IPs.
func peerTLS(cas *x509.CertPool, names []string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no peer certificate")
		}
		leaf := cs.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: cas, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		if !slices.Contains(names, leaf.Subject.CommonName) {
			return fmt.Errorf("peer %q is not a tunnel replica (allowed: %v)", leaf.Subject.CommonName, names)
		}
		return nil
	}
}

// forward asks the replica at peer to carry hostPort over its session.
func (s *Server) forward(ctx context.Context, peer, hostPort string) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{
		MinVersion: tls.VersionTLS13, GetClientCertificate: s.cfg.PeerCertificate,
		// Verified by VerifyConnection: chain and name, not the address.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		VerifyConnection:   peerTLS(s.cfg.PeerCAs, s.cfg.PeerNames),
	}}
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", peer)
	if err != nil {
		return nil, fmt.Errorf("replica at %s: %w", peer, err)
	}
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s: %s\r\n\r\n", hostPort, hostPort, forwardedHeader, s.cfg.Replica); err != nil {
		_ = c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("replica at %s: %w", peer, err)
	}
	if resp.StatusCode != http.StatusOK {
		_ = c.Close()
		return nil, fmt.Errorf("via replica at %s: %s", peer, resp.Status)
	}
	if br.Buffered() > 0 {
		_ = c.Close()
		return nil, fmt.Errorf("replica at %s sent data before the stream", peer)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
