package server

import (
	"context"
	"net"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/sitegrid/sitegrid/internal/tunnel"
)

// openTimeout bounds opening a stream and the agent's answer: a session
// whose link died but whose keepalive has not noticed yet fails here.
const openTimeout = 10 * time.Second

// openStream opens a stream to a node's agent and has it dial the kubelet.
func (s *Server) openStream(ctx context.Context, sess *yamux.Session, o tunnel.Open) (net.Conn, error) {
	st, err := sess.OpenStream()
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(openTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = st.SetDeadline(deadline)
	if err := tunnel.WriteOpen(st, o); err != nil {
		_ = st.Close()
		return nil, err
	}
	if err := tunnel.ReadReply(st); err != nil {
		_ = st.Close()
		return nil, err
	}
	_ = st.SetDeadline(time.Time{})
	return st, nil
}
