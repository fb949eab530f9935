package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sitegrid/sitegrid/internal/hub/proxy"
	"github.com/sitegrid/sitegrid/internal/hub/upstream"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestStreamsPassThrough: logs stream line by line and exec/attach/
// port-forward upgrades reach the apiserver and carry bytes both ways, with
// nothing cached or buffered. The upstream here stands in for the
// apiserver's streaming endpoints, which need a kubelet the apiserver can
// dial (in the lab that is the cloud-edge tunnel's job, a later issue).
func TestStreamsPassThrough(t *testing.T) {
	secondLine := make(chan struct{})
	upstreamSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer edge-token" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		switch {
		case r.URL.Path == "/readyz":
			_, _ = io.WriteString(w, "ok")
		case strings.HasSuffix(r.URL.Path, "/log"):
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "line 1\n")
			w.(http.Flusher).Flush()
			<-secondLine
			_, _ = io.WriteString(w, "line 2\n")
		case strings.HasSuffix(r.URL.Path, "/exec") && r.Header.Get("Upgrade") == "websocket":
			conn, rw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			_ = rw.Flush()
			// Echo, upper-cased, whatever the client sends.
			buf := make([]byte, 64)
			for {
				n, err := rw.Read(buf)
				if err != nil {
					return
				}
				_, _ = conn.Write([]byte(strings.ToUpper(string(buf[:n]))))
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(upstreamSrv.Close)
	store := openStore(t)
	transport := upstreamSrv.Client().Transport.(*http.Transport).Clone()
	tracker, err := upstream.New(upstream.Config{Endpoints: []string{upstreamSrv.URL}, Interval: time.Second,
		Client: &http.Client{Transport: roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			r.Header.Set("Authorization", "Bearer edge-token")
			return transport.RoundTrip(r)
		})}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go tracker.Run(ctx)
	p, err := proxy.New(proxy.Config{Upstream: tracker, Transport: transport, TokenTransport: transport, Cache: store})
	if err != nil {
		t.Fatal(err)
	}
	hub := httptest.NewTLSServer(p)
	t.Cleanup(hub.Close)
	testenv.Eventually(t, 10*time.Second, func(context.Context) error {
		if _, ok := tracker.Online(); !ok {
			return io.ErrUnexpectedEOF
		}
		return nil
	})

	// Logs: the first line arrives while the upstream still holds the second.
	req, _ := http.NewRequest(http.MethodGet, hub.URL+"/api/v1/namespaces/default/pods/app/log?follow=true", nil)
	req.Header.Set("Authorization", "Bearer edge-token")
	resp, err := hub.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	if line, err := lines.ReadString('\n'); err != nil || line != "line 1\n" {
		t.Fatalf("first log line %q, %v", line, err)
	}
	close(secondLine)
	if line, err := lines.ReadString('\n'); err != nil || line != "line 2\n" {
		t.Fatalf("second log line %q, %v", line, err)
	}

	// Exec: an upgraded connection carries bytes both ways.
	conn, err := tls.Dial("tcp", strings.TrimPrefix(hub.URL, "https://"), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /api/v1/namespaces/default/pods/app/exec?command=sh HTTP/1.1\r\nHost: hub\r\n"+
		"Authorization: Bearer edge-token\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	upgraded, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if upgraded.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("exec through the hub: %s", upgraded.Status)
	}
	_, _ = io.WriteString(conn, "echo hi")
	got := make([]byte, len("ECHO HI"))
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ECHO HI" {
		t.Fatalf("exec stream answered %q, %v", got, err)
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
