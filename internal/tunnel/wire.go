// Package tunnel is sitegrid's cloud-to-edge tunnel: kube-apiserver's
// egress selector sends its connections to nodes (logs, exec, attach,
// port-forward, the nodes/proxy subresource) as HTTP CONNECT to the tunnel
// server (package server), which carries each one as a stream of the one
// multiplexed connection the node's hub dialled out to it (package agent).
// This file is what both ends agree on: the session's settings and the
// header that opens a stream. docs/tunnel.md has the design.
package tunnel

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/yamux"
)

// DefaultAgentPort is where tunnel servers listen for agents.
const DefaultAgentPort = 8132

// SessionConfig is the yamux configuration of both ends. Each stream has a
// flow-control window of its own, so a reader that stops reading stalls
// its own stream only; keepalives find a dead link within about
// KeepAliveInterval plus ConnectionWriteTimeout.
func SessionConfig(log io.Writer) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 1024
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 10 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	// 1 MiB per stream keeps a WAN link of ~100 ms round trip busy at
	// 80 Mbit/s; a stream's buffer only grows to it while its reader lags.
	c.MaxStreamWindowSize = 1 << 20
	c.LogOutput = log
	return c
}

// Open is the header the server writes on a new stream: which node and
// kubelet port the apiserver asked for. The agent dials only its own
// kubelet, so the header names, it never addresses.
type Open struct {
	Node string
	Port int
}

// maxHeader bounds a header's length: a node name is at most 253 bytes.
const maxHeader = 512

// WriteOpen writes o to w.
func WriteOpen(w io.Writer, o Open) error {
	return writeString(w, o.Node+" "+strconv.Itoa(o.Port))
}

// ReadOpen reads the header WriteOpen wrote.
func ReadOpen(r io.Reader) (Open, error) {
	s, err := readString(r)
	if err != nil {
		return Open{}, err
	}
	node, port, ok := cut(s)
	if !ok {
		return Open{}, fmt.Errorf("malformed stream header %q", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return Open{}, fmt.Errorf("malformed stream header %q: bad port", s)
	}
	return Open{Node: node, Port: p}, nil
}

func cut(s string) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ' ' {
			return s[:i], s[i+1:], i > 0
		}
	}
	return "", "", false
}

// WriteReply answers an Open: an empty message is success, anything else
// is why the stream was refused (and the stream is then closed).
func WriteReply(w io.Writer, refusal string) error { return writeString(w, refusal) }

// Refusal is an agent's answer refusing a stream.
type Refusal struct{ Reason string }

func (r *Refusal) Error() string { return r.Reason }

// ReadReply reads the answer to an Open: nil, a *Refusal, or the error
// that kept the answer from arriving.
func ReadReply(r io.Reader) error {
	s, err := readString(r)
	if err != nil {
		return fmt.Errorf("no answer from the node's agent: %w", err)
	}
	if s != "" {
		return &Refusal{Reason: s}
	}
	return nil
}

func writeString(w io.Writer, s string) error {
	if len(s) > maxHeader {
		s = s[:maxHeader]
	}
	b := make([]byte, 2+len(s))
	binary.BigEndian.PutUint16(b, uint16(len(s)))
	copy(b[2:], s)
	_, err := w.Write(b)
	return err
}

func readString(r io.Reader) (string, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", err
	}
	l := int(binary.BigEndian.Uint16(n[:]))
	if l > maxHeader {
		return "", fmt.Errorf("stream header of %d bytes exceeds %d", l, maxHeader)
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// Splice copies both ways between a and b until both directions end; a
// direction that ends closes the other side's write half where it can, so
// a kubelet's end of a response reaches the apiserver.
func Splice(a, b net.Conn) (aToB, bToA int64) {
	done := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(b, a)
		closeWrite(b)
		done <- n
	}()
	bToA, _ = io.Copy(a, b)
	closeWrite(a)
	aToB = <-done
	_ = a.Close()
	_ = b.Close()
	return aToB, bToA
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	// yamux streams close their write half with Close.
	if _, ok := c.(*yamux.Stream); ok {
		_ = c.Close()
	}
}
