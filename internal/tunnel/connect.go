package tunnel

// The CONNECT endpoint's two ends outside the server: its unix socket, and
// a client of it (tools, benchmarks and tests) speaking as the apiserver's
// HTTPConnect egress does.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
)

// Connect sends a CONNECT for target to a tunnel server's unix socket, as
// kube-apiserver's HTTPConnect egress does, and returns the stream, or the
// refusal's status line as the error (tools and tests).
func Connect(socket, target string) (net.Conn, error) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	return ConnectOn(c, target)
}

// ConnectOn is Connect over a connection already open to the server (the
// TCP endpoint's TLS, as an HTTPS proxy client has); c is closed on error.
func ConnectOn(c net.Conn, target string) (net.Conn, error) {
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, errors.New(resp.Status)
	}
	return c, nil
}

// ListenSocket listens on a unix socket at path that only its owner can
// use (mode 0600), replacing one a previous run left.
func ListenSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, err
	}
	return l, nil
}
