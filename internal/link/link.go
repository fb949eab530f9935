// Package link is a cuttable network path: a TCP relay from a local address
// to a target. Cutting it drops every open connection and refuses new ones,
// as a broken site uplink does; healing it lets traffic through again on the
// same address. The lab puts one between each simulated site and the cloud;
// tests use it to partition a hub from its apiserver.
package link

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Link relays connections from Addr to a target.
type Link struct {
	target string
	dial   func() (net.Conn, error)
	ln     net.Listener

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Listen starts a link on listenAddr ("127.0.0.1:0" picks a port) to target.
func Listen(listenAddr, target string) (*Link, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	return Serve(ln, target), nil
}

// Serve starts a link on a listener the caller opened (one inside a network
// namespace, say); the link owns it from now on.
func Serve(ln net.Listener, target string) *Link {
	l := &Link{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	return l
}

// ServeDial is Serve with the link's far end reached by dial (inside a
// network namespace, say) instead of a target address.
func ServeDial(ln net.Listener, dial func() (net.Conn, error)) *Link {
	l := &Link{dial: dial, ln: ln, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	return l
}

// Addr is the address clients dial.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Cut drops every connection and refuses new ones until Heal.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	for c := range l.conns {
		_ = c.Close()
	}
}

// Heal lets traffic through again.
func (l *Link) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = false
}

// IsCut reports the link's state.
func (l *Link) IsCut() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cut
}

// Close stops the link and waits for its goroutines.
func (l *Link) Close() error {
	err := l.ln.Close()
	l.Cut()
	l.wg.Wait()
	return err
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		in, err := l.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		if !l.track(in) {
			_ = in.Close() // cut: the far side does not answer
			continue
		}
		l.wg.Add(1)
		go l.relay(in)
	}
}

func (l *Link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Link) untrack(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
}

func (l *Link) relay(in net.Conn) {
	defer l.wg.Done()
	defer l.untrack(in)
	defer in.Close()
	var out net.Conn
	var err error
	if l.dial != nil {
		out, err = l.dial()
	} else {
		out, err = net.Dial("tcp", l.target)
	}
	if err != nil {
		return
	}
	if !l.track(out) {
		_ = out.Close()
		return
	}
	defer l.untrack(out)
	defer out.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	<-done // one direction ended: close both
}
