package main

import (
	"net"
	"time"
)

// wan is a TCP relay on loopback that behaves as a site's uplink: each
// direction carries at most its rate, and delivers every byte half the
// round trip after the link took it. A queue of wanQueue bytes per
// direction is the link's buffer; a full queue holds the sender back, as a
// bottleneck's buffer does through TCP's windows.
type wan struct {
	ln          net.Listener
	target      string
	bytesPerSec float64
	oneWay      time.Duration
}

const (
	wanChunk = 16 << 10
	wanQueue = 1 << 20
)

func startWAN(target string, mbit float64, rtt time.Duration) (*wan, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	w := &wan{ln: ln, target: target, bytesPerSec: mbit * 1e6 / 8, oneWay: rtt / 2}
	go w.serve()
	return w, nil
}

func (w *wan) Addr() string { return w.ln.Addr().String() }

func (w *wan) Close() error { return w.ln.Close() }

func (w *wan) serve() {
	for {
		in, err := w.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			// A connection across the link takes a round trip to set up
			// (SYN, SYN-ACK) before the first byte goes: the client's first
			// bytes wait here for it.
			time.Sleep(2 * w.oneWay)
			out, err := net.Dial("tcp", w.target)
			if err != nil {
				in.Close()
				return
			}
			done := make(chan struct{}, 2)
			go func() { w.carry(out, in); done <- struct{}{} }()
			go func() { w.carry(in, out); done <- struct{}{} }()
			<-done
			<-done
			in.Close()
			out.Close()
		}()
	}
}

// carry moves src's bytes to dst at the link's rate and delay, then
// closes dst's write half.
func (w *wan) carry(dst, src net.Conn) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	q := make(chan chunk, wanQueue/wanChunk)
	go func() {
		defer close(q)
		// leaves is when the last byte taken has left the bottleneck.
		leaves := time.Now()
		for {
			b := make([]byte, wanChunk)
			n, err := src.Read(b)
			if n > 0 {
				if now := time.Now(); leaves.Before(now) {
					leaves = now
				}
				leaves = leaves.Add(time.Duration(float64(n) / w.bytesPerSec * float64(time.Second)))
				q <- chunk{b[:n], leaves.Add(w.oneWay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			// The far end is gone: end the reader too.
			_ = src.Close()
			for range q {
			}
			break
		}
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		_ = dst.Close()
	}
}
