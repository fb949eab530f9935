// Package server assembles sitegrid-hub: the TLS API front for the node's
// components (proxy), the persistent cache, the upstream tracker, and a
// plain HTTP endpoint for /healthz, /readyz and /metrics.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/certs"
	"github.com/sitegrid/sitegrid/internal/hub/config"
	"github.com/sitegrid/sitegrid/internal/hub/gossip"
	"github.com/sitegrid/sitegrid/internal/hub/proxy"
	"github.com/sitegrid/sitegrid/internal/hub/selfclient"
	"github.com/sitegrid/sitegrid/internal/hub/topology"
	"github.com/sitegrid/sitegrid/internal/hub/upstream"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/tunnel/agent"
)

// Hub is a hub built from its configuration and not yet started: New
// builds everything, Run starts it.
type Hub struct {
	cfg   config.HubConfiguration
	store *cache.Store
	certs *certs.Certificates
	// transports reach the cloud; their idle connections are closed when
	// the hub stops.
	transports []*http.Transport
	tracker    *upstream.Tracker
	// onOnline runs when the cloud comes back (set once the proxy is built,
	// before the tracker runs).
	onOnline func()
	// localNode, rules and member run only when configured (nil otherwise).
	localNode toolscache.SharedIndexInformer
	rules     *topology.Source
	member    *gossip.RunConfig
	tunnel    *agent.Agent
	api       *http.Server
	health    *http.Server
}

// New builds a hub from cfg: it checks the configuration, reads the
// certificates, opens the cache and builds every part, and starts nothing.
// A hub that is never run must be closed.
func New(cfg config.HubConfiguration) (_ *Hub, err error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	clientCAs, err := pki.ReadPool(cfg.ClientCAFile)
	if err != nil {
		return nil, err
	}
	serverCAs, err := pki.ReadPool(cfg.ServerCAFile)
	if err != nil {
		return nil, err
	}
	h := &Hub{cfg: cfg}
	hm := newHubMetrics(func() bool { _, online := h.tracker.Online(); return online }, cfg.CachePath)
	h.certs, err = certs.New(certs.Config{Dir: cfg.CertificateDirectory, ClientCertFile: cfg.ClientCertFile, ClientKeyFile: cfg.ClientKeyFile,
		ServingCertFile: cfg.ServingCertFile, ServingKeyFile: cfg.ServingKeyFile, ServerCAs: serverCAs,
		Online: func() (string, bool) { return h.tracker.Online() }, RenewalFailures: hm.renewalFailures})
	if err != nil {
		return nil, err
	}
	hm.watchCertificates(h.certs)
	store, err := cache.Open(cfg.CachePath)
	if err != nil {
		return nil, err
	}
	h.store = store
	defer func() {
		if err != nil {
			h.Close()
		}
	}()

	// Every new connection takes the hub's current credential: a renewed
	// one replaces the old without closing what is open.
	asHub := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverCAs, GetClientCertificate: h.certs.GetClientCertificate, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	asToken := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverCAs, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	h.transports = []*http.Transport{asHub, asToken}
	h.tracker, err = upstream.New(upstream.Config{
		Endpoints: cfg.Servers, Client: &http.Client{Transport: asHub, Timeout: 3 * time.Second}, Interval: cfg.ProbeInterval.Duration,
		OnChange: func(online bool) {
			klog.InfoS("cloud apiserver reachability changed", "node", cfg.NodeName, "online", online)
			if online && h.onOnline != nil {
				go h.onOnline()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	// What the hub reads for itself (topology rules, its unit's members) it
	// reads through itself, as the hub: cached, so it holds offline and
	// across restarts.
	self := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: clientCAs, GetClientCertificate: h.certs.GetClientCertificate, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	h.transports = append(h.transports, self)
	asSelf := func(agent string) *rest.Config {
		return &rest.Config{Host: "https://" + config.Loopback(cfg.ListenAddress), UserAgent: "sitegrid-hub/" + agent, Transport: self}
	}
	// The topology rules and the health member read core objects with one
	// client, and share one watch of the local node.
	var core rest.Interface
	if !cfg.ServiceTopology.Disabled || cfg.Health.UnitKey != "" {
		if core, err = selfclient.Core(asSelf("self")); err != nil {
			return nil, err
		}
		h.localNode = selfclient.LocalNode(core, cfg.NodeName)
	}
	var filter *topology.Filter
	if !cfg.ServiceTopology.Disabled {
		h.rules = topology.NewSource(cfg.NodeName, core, h.localNode)
		filter = &topology.Filter{Rules: h.rules, Components: cfg.ServiceTopology.Components}
		if e := cfg.ServiceTopology.KubernetesEndpoint; e != "" {
			filter.KubernetesEndpoint = netip.MustParseAddrPort(e) // checked by Validate
		}
	}
	if cfg.Health.UnitKey != "" {
		leases, err := selfclient.Leases(asSelf("health"))
		if err != nil {
			return nil, err
		}
		h.member = &gossip.RunConfig{
			Node: cfg.NodeName, UnitKey: cfg.Health.UnitKey, BindAddr: cfg.Health.BindAddress, AdvertiseAddr: cfg.Health.AdvertiseAddress,
			LocalNode: h.localNode, Core: core, Leases: leases, ReportInterval: cfg.Health.ReportInterval.Duration,
			Online: func() bool { _, online := h.tracker.Online(); return online },
		}
	}
	if len(cfg.Tunnel.Servers) > 0 {
		if h.tunnel, err = newTunnelAgent(cfg, serverCAs, h.certs); err != nil {
			return nil, err
		}
		hm.watchTunnel(h.tunnel)
	}
	p, err := proxy.New(proxy.Config{Upstream: h.tracker, Transport: asHub, TokenTransport: asToken, Cache: store,
		Impersonable: []proxy.Identity{{User: "system:node:" + cfg.NodeName, Groups: []string{"system:nodes", "system:authenticated"}}},
		Self:         h.certs.Self(), Filter: filter})
	if err != nil {
		return nil, err
	}
	// Pod statuses the kubelet wrote offline go to the cloud once it is back.
	h.onOnline = func() {
		if endpoint, online := h.tracker.Online(); online {
			p.FlushPodStatuses(context.Background(), endpoint)
		}
	}
	h.api = &http.Server{
		Addr:              cfg.ListenAddress,
		Handler:           hm.instrument(p.Serve),
		ReadHeaderTimeout: 30 * time.Second,
		TLSConfig:         &tls.Config{GetCertificate: h.certs.GetCertificate, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clientCAs, MinVersion: tls.VersionTLS12},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	// Ready means the hub answers: from the cloud, or from its cache.
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if _, online := h.tracker.Online(); online {
			_, _ = w.Write([]byte("ok: online"))
			return
		}
		_, _ = w.Write([]byte("ok: offline, answering from the cache"))
	})
	mux.Handle("/metrics", hm)
	h.health = &http.Server{Addr: cfg.HealthAddress, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return h, nil
}

// Run builds a hub and runs it until ctx ends.
func Run(ctx context.Context, cfg config.HubConfiguration) error {
	h, err := New(cfg)
	if err != nil {
		return err
	}
	return h.Run(ctx)
}

// Run starts the hub and serves until ctx ends or a part fails; either way
// it stops everything it started, waits for it, and closes the cache.
func (h *Hub) Run(ctx context.Context) error {
	defer h.Close()
	cfg := h.cfg
	if cfg.MemoryLimit != nil && cfg.MemoryLimit.Value() > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit.Value())
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(*cfg.GCPercent)
	}
	apiLn, err := net.Listen("tcp", cfg.ListenAddress)
	if err != nil {
		return err
	}
	healthLn, err := net.Listen("tcp", cfg.HealthAddress)
	if err != nil {
		_ = apiLn.Close()
		return err
	}
	klog.InfoS("sitegrid-hub serving", "node", cfg.NodeName, "api", apiLn.Addr().String(), "health", healthLn.Addr().String(), "servers", cfg.Servers)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ignoreClosed(h.api.ServeTLS(apiLn, "", "")) })
	g.Go(func() error { return ignoreClosed(h.health.Serve(healthLn)) })
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Open watches never go idle: closed when the grace period is over.
		if err := h.api.Shutdown(sctx); err != nil {
			_ = h.api.Close()
		}
		if err := h.health.Shutdown(sctx); err != nil {
			_ = h.health.Close()
		}
		return nil
	})
	g.Go(func() error { h.tracker.Run(gctx); return nil })
	h.certs.Start(gctx)
	if h.localNode != nil {
		g.Go(func() error { h.localNode.Run(gctx.Done()); return nil })
	}
	if h.rules != nil {
		g.Go(func() error { h.rules.Run(gctx); return nil })
	}
	if h.member != nil {
		g.Go(func() error { return gossip.Run(gctx, *h.member) })
	}
	if h.tunnel != nil {
		g.Go(func() error { return h.tunnel.Run(gctx) })
	}
	return g.Wait()
}

// Close releases what New acquired: the cache file and the transports'
// idle connections. Run closes the hub when it returns.
func (h *Hub) Close() {
	for _, t := range h.transports {
		t.CloseIdleConnections()
	}
	if h.store != nil {
		_ = h.store.Close()
		h.store = nil
	}
}

// newTunnelAgent builds the tunnel agent: it authenticates with the hub's
// own node-bound credential, renewed ones included.
func newTunnelAgent(cfg config.HubConfiguration, serverCAs *x509.CertPool, c *certs.Certificates) (*agent.Agent, error) {
	if cfg.Tunnel.ServerCAFile != "" {
		var err error
		if serverCAs, err = pki.ReadPool(cfg.Tunnel.ServerCAFile); err != nil {
			return nil, err
		}
	}
	return agent.New(agent.Config{NodeName: cfg.NodeName, Servers: cfg.Tunnel.Servers, ServerCAs: serverCAs,
		GetClientCertificate: c.GetClientCertificate, KubeletAddress: cfg.Tunnel.KubeletAddress, KubeletPort: cfg.Tunnel.KubeletPort})
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// instrument counts requests by how they were served and times them.
func (m *hubMetrics) instrument(serve func(http.ResponseWriter, *http.Request) proxy.Served) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		served := serve(rec, r)
		m.latency.Update(rec.firstByte.Sub(start).Seconds())
		m.served[served].Inc()
	})
}

// recorder notes when a response's headers went out.
type recorder struct {
	http.ResponseWriter
	firstByte time.Time
}

func (r *recorder) WriteHeader(code int) {
	if r.firstByte.IsZero() {
		r.firstByte = time.Now()
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.firstByte.IsZero() {
		r.firstByte = time.Now()
	}
	return r.ResponseWriter.Write(b)
}

// Flush keeps watches streaming through the recorder.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
