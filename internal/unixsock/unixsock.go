// Package unixsock listens on private unix sockets: the tunnel's CONNECT
// socket, the lab's control socket and its relay of the apiserver's egress.
package unixsock

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// MaxPath is the longest unix socket path Linux accepts.
const MaxPath = 107

// CheckPath says, in words a user can act on, why path cannot be a socket.
func CheckPath(path string) error {
	if len(path) > MaxPath {
		return fmt.Errorf("the socket %s is %d bytes, over the %d a unix socket path may have: use a shorter --workdir", path, len(path), MaxPath)
	}
	return nil
}

// Listen listens on a unix socket at path that only its owner can use
// (mode 0600), replacing one a previous run left.
func Listen(path string) (net.Listener, error) {
	if err := CheckPath(path); err != nil {
		return nil, err
	}
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
