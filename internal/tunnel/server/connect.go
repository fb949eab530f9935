package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/tunnel"
)

// ServeHTTP answers the apiserver's egress CONNECT requests, and those of
// the kubelet clients (metrics-server, Prometheus) using the TCP endpoint
// as their HTTPS proxy: a tunnelled node's kubelet is reached through the
// node's session, anything else directly (when Config.Direct allows it and
// the client may). Refusals are in the status
// line, which the apiserver puts in the error the user sees.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.serveConnect(w, r, false) }

// serveConnect serves a CONNECT; forwarded ones came from another replica
// and are served from this replica's sessions only.
func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request, forwarded bool) {
	if r.Method != http.MethodConnect {
		http.Error(w, "this is the tunnel's egress endpoint: only CONNECT host:port", http.StatusMethodNotAllowed)
		return
	}
	// The apiserver's HTTPConnect dialer sends the target in the request
	// line and 127.0.0.1 in Host.
	hostPort := r.URL.Host
	if hostPort == "" {
		hostPort = r.RequestURI
	}
	upstream, how, code, err := s.dial(r.Context(), hostPort, forwarded, !forwarded && s.kubeletsOnly(r))
	if err != nil {
		s.metrics.stream(how).Inc()
		klog.V(2).InfoS("tunnel CONNECT refused", "target", hostPort, "err", err)
		refuse(w, code, err)
		return
	}
	conn, buf, err := hijack(w)
	if err != nil {
		_ = upstream.Close()
		return
	}
	s.metrics.stream(how).Inc()
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		_ = conn.Close()
		_ = upstream.Close()
		return
	}
	s.metrics.open.Add(1)
	defer s.metrics.open.Add(-1)
	toNode, fromNode := tunnel.Splice(buffered(conn, buf), upstream)
	s.metrics.bytesToNode.Add(int(toNode))
	s.metrics.bytesFromNode.Add(int(fromNode))
}

// kubeletsOnly says whether the TLS client of r is one that may reach
// kubelets only (Config.KubeletClientNames).
func (s *Server) kubeletsOnly(r *http.Request) bool {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return false
	}
	cn := r.TLS.PeerCertificates[0].Subject.CommonName
	return slices.Contains(s.cfg.KubeletClientNames, cn) && !slices.Contains(s.cfg.ConnectClientNames, cn)
}

// dial opens the connection a CONNECT asked for, and says how (a metrics
// label) or why not, with the status to refuse with. A kubelets-only
// client reaches a Node's kubelet port, through the tunnel or (a node the
// tunnel does not carry) directly, and nothing else.
func (s *Server) dial(ctx context.Context, hostPort string, forwarded, kubeletsOnly bool) (net.Conn, string, int, error) {
	t, err := resolve(s.nodes, hostPort)
	if err != nil {
		return nil, resultRefused, http.StatusForbidden, err
	}
	if kubeletsOnly {
		if t.node == nil {
			return nil, resultRefused, http.StatusForbidden, fmt.Errorf("%s is no node's address: this client may reach kubelets only", hostPort)
		}
		if err := checkPort(t); err != nil {
			return nil, resultRefused, http.StatusForbidden, err
		}
	}
	if t.node != nil {
		if sess := s.sessions.get(t.node.Name); sess != nil {
			return s.viaSession(ctx, sess, t)
		}
		if st := s.leases.state(t.node.Name); st.tunnelled {
			return s.viaHolder(ctx, t, st, hostPort, forwarded)
		}
	}
	if !s.cfg.Direct {
		return nil, resultRefused, http.StatusForbidden, fmt.Errorf("%s is not a tunnelled node's address and direct connections are off", hostPort)
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", hostPort)
	if err != nil {
		return nil, resultUnreachable, http.StatusBadGateway, err
	}
	return c, resultDirect, 0, nil
}

// viaSession opens a stream of the node's session on this replica.
func (s *Server) viaSession(ctx context.Context, sess *yamux.Session, t target) (net.Conn, string, int, error) {
	if err := checkPort(t); err != nil {
		return nil, resultRefused, http.StatusForbidden, err
	}
	c, err := s.openStream(ctx, sess, tunnel.Open{Node: t.node.Name, Port: t.port})
	var refusal *tunnel.Refusal
	switch {
	case errors.As(err, &refusal):
		return nil, resultRefused, http.StatusBadGateway, fmt.Errorf("node %s: %w", t.node.Name, err)
	case err != nil:
		// The link died before keepalives noticed: the session is done,
		// and the agent will dial again.
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			_ = sess.Close()
		}
		return nil, resultUnreachable, http.StatusBadGateway, fmt.Errorf("node %s is not connected to the tunnel (its session broke: %v)", t.node.Name, err)
	}
	return c, resultTunnel, 0, nil
}

// viaHolder forwards, once, to the replica the node's Lease names; a node
// no replica holds is disconnected.
func (s *Server) viaHolder(ctx context.Context, t target, st leaseState, hostPort string, forwarded bool) (net.Conn, string, int, error) {
	if err := checkPort(t); err != nil {
		return nil, resultRefused, http.StatusForbidden, err
	}
	if forwarded || st.holder == "" || st.holder == s.cfg.Replica || st.peer == "" || s.cfg.PeerCertificate == nil {
		return nil, resultUnreachable, http.StatusBadGateway, disconnected(t.node.Name, st)
	}
	c, err := s.forward(ctx, st.peer, hostPort)
	if err != nil {
		return nil, resultUnreachable, http.StatusBadGateway, fmt.Errorf("node %s is held by replica %s, which did not carry the stream: %w", t.node.Name, st.holder, err)
	}
	return c, resultForwarded, 0, nil
}

// checkPort allows a tunnelled node's kubelet port only.
func checkPort(t target) error {
	if want := kubeletPort(t.node); t.port != want {
		return fmt.Errorf("node %s: port %d is not its kubelet's (%d): the tunnel reaches kubelets only", t.node.Name, t.port, want)
	}
	return nil
}

func disconnected(node string, st leaseState) error {
	if st.renewed.IsZero() {
		return fmt.Errorf("node %s is not connected to the tunnel (partitioned, or its hub is down)", node)
	}
	return fmt.Errorf("node %s is not connected to the tunnel (partitioned, or its hub is down); last seen %s ago", node, time.Since(st.renewed).Round(time.Second))
}

// refuse answers with code and err as the status line's reason.
func refuse(w http.ResponseWriter, code int, err error) {
	conn, _, herr := hijack(w)
	if herr != nil {
		http.Error(w, err.Error(), code)
		return
	}
	defer conn.Close()
	reason := strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, err.Error())
	_, _ = fmt.Fprintf(conn, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", code, reason)
}

func hijack(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("connection cannot be hijacked")
	}
	return hj.Hijack()
}

// buffered is conn with what the HTTP server read ahead of the CONNECT's
// end put back in front.
func buffered(conn net.Conn, buf *bufio.ReadWriter) net.Conn {
	if buf == nil || buf.Reader.Buffered() == 0 {
		return conn
	}
	return &readAhead{Conn: conn, r: buf.Reader}
}

type readAhead struct {
	net.Conn
	r *bufio.Reader
}

func (c *readAhead) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *readAhead) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
