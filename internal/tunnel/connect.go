package tunnel

// A client of the CONNECT endpoint (tools, benchmarks and tests) speaking
// as the apiserver's HTTPConnect egress does.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
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
