// Package agent is the edge end of the tunnel, run inside sitegrid-hub:
// it dials out to the tunnel servers (nothing on the node listens for the
// cloud), authenticated by the node's own client certificate, and answers
// each stream the server opens with a connection to this node's kubelet
// and nothing else.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/tunnel"
)

// Config configures an agent.
type Config struct {
	// NodeName is the node this agent serves; streams for any other node
	// are refused.
	NodeName string
	// Servers are the tunnel servers' host:port, tried in turn. Each holds
	// the node's one session while it is connected to it.
	Servers []string
	// ServerCAs verify the servers' certificates.
	ServerCAs *x509.CertPool
	// GetClientCertificate returns the node's client certificate, read at
	// every dial so a renewed one is used from the next connection on.
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// KubeletAddress is where the kubelet is dialled (default
	// 127.0.0.1:10250); KubeletPort the only port a stream may ask for, the
	// one the Node publishes (default: KubeletAddress's).
	KubeletAddress string
	KubeletPort    int
	// Dial makes connections (default net.Dialer); tests inject faults.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MinBackoff and MaxBackoff bound the wait between reconnects (default
	// 1s and 30s); each wait is jittered by up to half its length.
	MinBackoff, MaxBackoff time.Duration
}

// Agent keeps one session to a tunnel server open.
type Agent struct {
	cfg Config
	// connected is the server of the session open now, "" when none.
	connected atomic.Pointer[string]
	streams   atomic.Int64
}

// New checks cfg and builds an agent.
func New(cfg Config) (*Agent, error) {
	if cfg.NodeName == "" || len(cfg.Servers) == 0 || cfg.GetClientCertificate == nil || cfg.ServerCAs == nil {
		return nil, errors.New("tunnel agent: node name, servers, server CAs and a client certificate are required")
	}
	for _, s := range cfg.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("tunnel agent: server %q is not host:port: %w", s, err)
		}
	}
	if cfg.KubeletAddress == "" {
		cfg.KubeletAddress = "127.0.0.1:10250"
	}
	if cfg.KubeletPort == 0 {
		_, p, err := net.SplitHostPort(cfg.KubeletAddress)
		if err != nil {
			return nil, fmt.Errorf("tunnel agent: kubelet address %q: %w", cfg.KubeletAddress, err)
		}
		if cfg.KubeletPort, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("tunnel agent: kubelet address %q: %w", cfg.KubeletAddress, err)
		}
	}
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		cfg.Dial = d.DialContext
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	a := &Agent{cfg: cfg}
	a.connected.Store(new(string))
	return a, nil
}

// Connected returns the server of the open session, or "".
func (a *Agent) Connected() string { return *a.connected.Load() }

// Streams is the number of streams open now.
func (a *Agent) Streams() int64 { return a.streams.Load() }

// Run connects and reconnects until ctx ends. A lost session, a missed
// keepalive or a refused dial never ends it: it waits, backing off with
// jitter, and dials the next server.
func (a *Agent) Run(ctx context.Context) error {
	backoff := a.cfg.MinBackoff
	for i := 0; ; i++ {
		server := a.cfg.Servers[i%len(a.cfg.Servers)]
		start := time.Now()
		err := a.session(ctx, server)
		if ctx.Err() != nil {
			return nil
		}
		// A session that lasted resets the backoff: the next cut is news.
		if time.Since(start) > a.cfg.MaxBackoff {
			backoff = a.cfg.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		klog.InfoS("tunnel session ended; reconnecting", "node", a.cfg.NodeName, "server", server, "err", err, "after", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, a.cfg.MaxBackoff)
	}
}

// session dials server and serves its streams until the session ends.
func (a *Agent) session(ctx context.Context, server string) error {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	raw, err := a.cfg.Dial(dctx, "tcp", server)
	if err != nil {
		cancel()
		return err
	}
	host, _, _ := net.SplitHostPort(server)
	conn := tls.Client(raw, &tls.Config{ServerName: host, RootCAs: a.cfg.ServerCAs,
		GetClientCertificate: a.cfg.GetClientCertificate, MinVersion: tls.VersionTLS13})
	err = conn.HandshakeContext(dctx)
	cancel()
	if err != nil {
		_ = raw.Close()
		return fmt.Errorf("TLS with %s: %w", server, err)
	}
	sess, err := yamux.Client(conn, tunnel.SessionConfig(io.Discard))
	if err != nil {
		_ = conn.Close()
		return err
	}
	a.connected.Store(&server)
	klog.InfoS("tunnel session open", "node", a.cfg.NodeName, "server", server)
	defer func() {
		a.connected.Store(new(string))
		_ = sess.Close()
	}()
	go func() {
		select {
		case <-ctx.Done():
			_ = sess.Close()
		case <-sess.CloseChan():
		}
	}()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return err
		}
		a.streams.Add(1)
		go func() {
			defer a.streams.Add(-1)
			a.serve(ctx, st)
		}()
	}
}

// serve answers one stream: the header must name this node and its kubelet
// port; the agent then dials its own kubelet, whatever address the
// apiserver had for it.
func (a *Agent) serve(ctx context.Context, st *yamux.Stream) {
	_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
	open, err := tunnel.ReadOpen(st)
	_ = st.SetReadDeadline(time.Time{})
	if err != nil {
		_ = st.Close()
		return
	}
	if refusal := a.check(open); refusal != "" {
		klog.InfoS("tunnel stream refused", "node", a.cfg.NodeName, "asked", open.Node, "port", open.Port, "reason", refusal)
		_ = tunnel.WriteReply(st, refusal)
		_ = st.Close()
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	kubelet, err := a.cfg.Dial(dctx, "tcp", a.cfg.KubeletAddress)
	cancel()
	if err != nil {
		_ = tunnel.WriteReply(st, fmt.Sprintf("node %s: kubelet not reachable: %v", a.cfg.NodeName, err))
		_ = st.Close()
		return
	}
	if err := tunnel.WriteReply(st, ""); err != nil {
		_ = kubelet.Close()
		_ = st.Close()
		return
	}
	tunnel.Splice(st, kubelet)
}

func (a *Agent) check(o tunnel.Open) string {
	if o.Node != a.cfg.NodeName {
		return fmt.Sprintf("this is node %s's agent, not %s's", a.cfg.NodeName, o.Node)
	}
	if o.Port != a.cfg.KubeletPort {
		return fmt.Sprintf("node %s: port %d is not the kubelet's (%d)", a.cfg.NodeName, o.Port, a.cfg.KubeletPort)
	}
	return ""
}
