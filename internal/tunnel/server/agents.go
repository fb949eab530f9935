package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/hub/certs"
	"github.com/sitegrid/sitegrid/internal/tunnel"
)

// The node-bound identities an agent may present: the node's hub
// credential (sitegrid-hub:<node>, which sitegrid-manager's CSR approver
// issues for that node only), or a kubelet's (system:node:<node> in group
// system:nodes, as the Node authorizer reads it).
const (
	nodeUserPrefix = "system:node:"
	nodesGroup     = "system:nodes"
)

// sessions holds the sessions of the nodes connected to this replica, one
// per node: a node that reconnects replaces its old session.
type sessions struct {
	mu    sync.Mutex
	nodes map[string]*yamux.Session
}

func (s *sessions) get(node string) *yamux.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[node]
}

// put makes sess node's session and returns the one it replaces.
func (s *sessions) put(node string, sess *yamux.Session) *yamux.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.nodes[node]
	s.nodes[node] = sess
	return old
}

// remove forgets sess, if it is still node's session, and says so.
func (s *sessions) remove(node string, sess *yamux.Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nodes[node] != sess {
		return false
	}
	delete(s.nodes, node)
	return true
}

func (s *sessions) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.nodes))
	for n := range s.nodes {
		out = append(out, n)
	}
	return out
}

func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.nodes)
}

// nodeOf is the node a verified client certificate belongs to: its
// identity, never a name the agent declares.
func nodeOf(cs tls.ConnectionState) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", errors.New("no client certificate")
	}
	c := cs.PeerCertificates[0]
	if name, ok := strings.CutPrefix(c.Subject.CommonName, certs.ClientUserPrefix); ok && name != "" {
		return name, nil
	}
	name, ok := strings.CutPrefix(c.Subject.CommonName, nodeUserPrefix)
	if !ok || name == "" || !slices.Contains(c.Subject.Organization, nodesGroup) {
		return "", fmt.Errorf("certificate of %q (groups %v) is not a node's: expected %s<node> or %s<node> in group %s",
			c.Subject.CommonName, c.Subject.Organization, certs.ClientUserPrefix, nodeUserPrefix, nodesGroup)
	}
	return name, nil
}

// serveAgents accepts agents on l until it is closed.
func (s *Server) serveAgents(ctx context.Context, l net.Listener) error {
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go s.serveAgent(ctx, conn)
	}
}

// serveAgent authenticates one agent and holds its session until it ends.
func (s *Server) serveAgent(ctx context.Context, raw net.Conn) {
	conn := tls.Server(raw, s.agentTLS)
	hctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		s.metrics.agentRefused.Inc()
		klog.V(2).InfoS("tunnel agent handshake failed", "remote", raw.RemoteAddr(), "err", err)
		_ = raw.Close()
		return
	}
	node, err := nodeOf(conn.ConnectionState())
	if err == nil {
		if _, ok, _ := s.nodes.GetByKey(node); !ok {
			err = fmt.Errorf("no Node %s", node)
		}
	}
	if err != nil {
		s.metrics.agentRefused.Inc()
		klog.InfoS("tunnel agent refused", "remote", raw.RemoteAddr(), "err", err)
		_ = conn.Close()
		return
	}
	sess, err := yamux.Server(conn, tunnel.SessionConfig(io.Discard))
	if err != nil {
		_ = conn.Close()
		return
	}
	if old := s.sessions.put(node, sess); old != nil {
		_ = old.Close()
	}
	klog.InfoS("tunnel agent connected", "node", node, "remote", raw.RemoteAddr())
	s.leases.held(ctx, node)
	select {
	case <-sess.CloseChan():
	case <-ctx.Done():
		_ = sess.Close()
	}
	if s.sessions.remove(node, sess) {
		klog.InfoS("tunnel agent disconnected", "node", node)
		s.leases.released(node)
	}
}
