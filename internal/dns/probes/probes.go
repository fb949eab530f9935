// Package probes is sitegrid-dns's plugin for the probes a node's service
// manager and a kubelet use, on Kubernetes' paths: /healthz (the server is
// up and not shutting down) and /readyz (every plugin that can say so, in
// every server block naming the address, is ready: the kubernetes plugin
// has synced through the hub, the unit-names index has its Node and
// StatefulSetGrids). Unlike CoreDNS's ready plugin, readiness is checked at
// every request, not only until it was first reached. ?verbose lists the
// checks as the apiserver does.
package probes

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredns/coredns/plugin/ready"
)

// Name is the plugin's directive.
const Name = "probes"

// endpoint serves the probes on one address, for every server block that
// names it.
type endpoint struct {
	addr string

	mu     sync.Mutex
	checks map[string]ready.Readiness // "zone plugin" -> plugin
	srv    *http.Server

	stopping atomic.Bool
}

var (
	endpointsMu sync.Mutex
	endpoints   = map[string]*endpoint{}
)

// endpointFor returns the address's endpoint, made on first use.
func endpointFor(addr string) *endpoint {
	endpointsMu.Lock()
	defer endpointsMu.Unlock()
	e, ok := endpoints[addr]
	if !ok {
		e = &endpoint{addr: addr, checks: map[string]ready.Readiness{}}
		endpoints[addr] = e
	}
	return e
}

// add registers a server block's plugin as one of the readiness checks.
func (e *endpoint) add(name string, r ready.Readiness) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.checks[name] = r
}

// start listens, unless another server block's setup already did.
func (e *endpoint) start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w", Name, e.addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", e.healthz)
	mux.HandleFunc("/readyz", e.readyz)
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	go e.srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed at stop
	return nil
}

// stop answers 503 while it closes the listener; the address's endpoint is
// forgotten, so a reload's new configuration starts afresh.
func (e *endpoint) stop() error {
	endpointsMu.Lock()
	if endpoints[e.addr] == e {
		delete(endpoints, e.addr)
	}
	endpointsMu.Unlock()
	e.stopping.Store(true)
	e.mu.Lock()
	srv := e.srv
	e.srv = nil
	e.mu.Unlock()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}

func (e *endpoint) healthz(w http.ResponseWriter, _ *http.Request) {
	if e.stopping.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprint(w, "ok")
}

func (e *endpoint) readyz(w http.ResponseWriter, r *http.Request) {
	ok, lines := e.ready()
	_, verbose := r.URL.Query()["verbose"]
	switch {
	case !ok:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "%s\nreadyz check failed\n", strings.Join(lines, "\n"))
	case verbose:
		fmt.Fprintf(w, "%s\nreadyz check passed\n", strings.Join(lines, "\n"))
	default:
		fmt.Fprint(w, "ok")
	}
}

// ready asks every check, in name order: a line each, "[+]name ok" or
// "[-]name not ready".
func (e *endpoint) ready() (bool, []string) {
	lines := []string{}
	ok := true
	if e.stopping.Load() {
		ok = false
		lines = append(lines, "[-]shutdown shutting down")
	}
	e.mu.Lock()
	names := make([]string, 0, len(e.checks))
	for name := range e.checks {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if e.checks[name].Ready() {
			lines = append(lines, "[+]"+name+" ok")
			continue
		}
		ok = false
		lines = append(lines, "[-]"+name+" not ready")
	}
	e.mu.Unlock()
	return ok, lines
}
