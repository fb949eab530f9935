// Package server assembles sitegrid-hub: the TLS API front for the node's
// components (proxy), the persistent cache, the upstream tracker, and a
// plain HTTP endpoint for /healthz, /readyz and /metrics.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/gossip"
	"github.com/sitegrid/sitegrid/internal/hub/proxy"
	"github.com/sitegrid/sitegrid/internal/hub/selfclient"
	"github.com/sitegrid/sitegrid/internal/hub/topology"
	"github.com/sitegrid/sitegrid/internal/hub/upstream"
)

// Config is the hub's configuration, from a YAML file and flags.
type Config struct {
	// NodeName is the node the hub serves.
	NodeName string `json:"nodeName"`
	// ListenAddress serves the Kubernetes API to the node's components.
	ListenAddress string `json:"listenAddress"`
	// ServingCertFile and ServingKeyFile are the hub's serving certificate.
	ServingCertFile string `json:"servingCertFile"`
	ServingKeyFile  string `json:"servingKeyFile"`
	// ClientCAFile verifies client certificates (the cluster CA).
	ClientCAFile string `json:"clientCAFile"`
	// Servers are the cloud apiserver URLs, in order of preference.
	Servers []string `json:"servers"`
	// ServerCAFile verifies the apiservers.
	ServerCAFile string `json:"serverCAFile"`
	// ClientCertFile and ClientKeyFile are the hub's own credential, used to
	// impersonate certificate clients (RBAC: docs/hub.md).
	ClientCertFile string `json:"clientCertFile"`
	ClientKeyFile  string `json:"clientKeyFile"`
	// CachePath is the cache file.
	CachePath string `json:"cachePath"`
	// HealthAddress serves /healthz, /readyz and /metrics over plain HTTP.
	HealthAddress string `json:"healthAddress"`
	// ProbeInterval is how often each apiserver is probed ("2s").
	ProbeInterval metav1.Duration `json:"probeInterval"`
	// MemoryLimit, when set, is the Go runtime's soft memory limit ("12Mi"):
	// the hub's live heap is a few MiB whatever the cluster's size (lists
	// stream through it), and a limit near it makes the runtime hand freed
	// memory back at once, at the price of latency (docs/hub.md has both
	// measured). Unset or "0": the runtime's default, or GOMEMLIMIT.
	MemoryLimit *resource.Quantity `json:"memoryLimit,omitempty"`
	// GCPercent is the Go runtime's garbage collection target (GOGC): the
	// heap may grow by this percentage of the live heap before a collection.
	// Default 50 (the runtime's own is 100): the hub's live heap is about
	// 3 MiB, so this holds 1.5 MiB less at a cost not measurable in its
	// latency (docs/hub.md). The GOGC environment variable, when set, wins.
	GCPercent *int `json:"gcPercent,omitempty"`
	// ServiceTopology configures the endpoint filter (docs/hub.md).
	ServiceTopology ServiceTopology `json:"serviceTopology,omitempty"`
	// Health configures distributed health (docs/health.md).
	Health Health `json:"health,omitempty"`
}

// Health configures the hub's member of its unit's gossip group.
type Health struct {
	// UnitKey is the node label naming the node's unit: the NodeGroup's
	// name (its nodes carry <group>=<unit>). Empty: no distributed health.
	UnitKey string `json:"unitKey,omitempty"`
	// BindAddress is where the hub gossips, UDP and TCP (default
	// "0.0.0.0:7946"); the others dial its port on the node's InternalIP,
	// or the node's health.sitegrid.io/gossip-address annotation.
	BindAddress string `json:"bindAddress,omitempty"`
	// AdvertiseAddress overrides what the others dial.
	AdvertiseAddress string `json:"advertiseAddress,omitempty"`
	// ReportInterval is how often the unit's report is renewed when nothing
	// changes (default 10s); the control plane takes a unit whose report is
	// older than three of them for unreachable.
	ReportInterval metav1.Duration `json:"reportInterval,omitempty"`
}

// ServiceTopology configures the service topology filter.
type ServiceTopology struct {
	// Disabled turns the filter off: every component sees every endpoint.
	Disabled bool `json:"disabled,omitempty"`
	// Components whose reads of EndpointSlices and Endpoints are filtered,
	// by User-Agent name (default kube-proxy and coredns).
	Components []string `json:"components,omitempty"`
	// KubernetesEndpoint, an IP:port where the node's pods reach this hub,
	// makes the default/kubernetes Service point there for those
	// components, so in-cluster clients on the node go through the hub too
	// and keep working offline. The hub must serve on it with a
	// certificate of the cluster CA naming that IP.
	KubernetesEndpoint string `json:"kubernetesEndpoint,omitempty"`
}

// DefaultGCPercent is the hub's GOGC unless configured.
const DefaultGCPercent = 50

// Defaults fills what is unset.
func (c *Config) Defaults() {
	if c.ListenAddress == "" {
		c.ListenAddress = "127.0.0.1:10290"
	}
	if c.HealthAddress == "" {
		c.HealthAddress = "127.0.0.1:10291"
	}
	if c.CachePath == "" {
		c.CachePath = "/var/lib/sitegrid-hub/cache.db"
	}
	if c.ProbeInterval.Duration == 0 {
		c.ProbeInterval.Duration = 2 * time.Second
	}
	if c.GCPercent == nil {
		c.GCPercent = ptr.To(DefaultGCPercent)
	}
	if len(c.ServiceTopology.Components) == 0 {
		c.ServiceTopology.Components = topology.DefaultComponents
	}
	if c.Health.UnitKey != "" && c.Health.BindAddress == "" {
		c.Health.BindAddress = "0.0.0.0:7946"
	}
	if c.Health.UnitKey != "" && c.Health.ReportInterval.Duration == 0 {
		c.Health.ReportInterval.Duration = 10 * time.Second
	}
}

// Validate says what is missing.
func (c *Config) Validate() error {
	var missing []string
	for name, v := range map[string]string{
		"nodeName": c.NodeName, "servingCertFile": c.ServingCertFile, "servingKeyFile": c.ServingKeyFile,
		"clientCAFile": c.ClientCAFile, "serverCAFile": c.ServerCAFile, "clientCertFile": c.ClientCertFile, "clientKeyFile": c.ClientKeyFile,
	} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(c.Servers) == 0 {
		missing = append(missing, "servers")
	}
	if e := c.ServiceTopology.KubernetesEndpoint; e != "" {
		if _, err := netip.ParseAddrPort(e); err != nil {
			return fmt.Errorf("serviceTopology.kubernetesEndpoint %q is not an IP:port: %w", e, err)
		}
	}
	if c.Health.UnitKey != "" {
		for name, a := range map[string]string{"health.bindAddress": c.Health.BindAddress, "health.advertiseAddress": c.Health.AdvertiseAddress} {
			if a == "" {
				continue
			}
			if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
				return fmt.Errorf("%s %q is not host:port", name, a)
			}
		}
		if d := c.Health.ReportInterval.Duration; d != 0 && d < time.Second {
			return fmt.Errorf("health.reportInterval %s is under 1s", d)
		}
	}
	if c.GCPercent != nil && *c.GCPercent < 10 {
		return fmt.Errorf("gcPercent %d is under 10 (the hub would do little but collect garbage)", *c.GCPercent)
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("hub configuration lacks %s", strings.Join(missing, ", "))
	}
	return nil
}

// LoadFile reads a YAML configuration; fields set by flags are applied after.
func LoadFile(path string) (Config, error) {
	var c Config
	data, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Run serves until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, cfg Config) error {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.MemoryLimit != nil && cfg.MemoryLimit.Value() > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit.Value())
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(*cfg.GCPercent)
	}
	clientCAs, err := loadPool(cfg.ClientCAFile)
	if err != nil {
		return err
	}
	serverCAs, err := loadPool(cfg.ServerCAFile)
	if err != nil {
		return err
	}
	serving, err := tls.LoadX509KeyPair(cfg.ServingCertFile, cfg.ServingKeyFile)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	hubCred, err := tls.LoadX509KeyPair(cfg.ClientCertFile, cfg.ClientKeyFile)
	if err != nil {
		return fmt.Errorf("hub client certificate: %w", err)
	}
	store, err := cache.Open(cfg.CachePath)
	if err != nil {
		return err
	}
	defer store.Close()

	asHub := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverCAs, Certificates: []tls.Certificate{hubCred}, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	asToken := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverCAs, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	tracker, err := upstream.New(upstream.Config{
		Endpoints: cfg.Servers, Client: &http.Client{Transport: asHub, Timeout: 3 * time.Second}, Interval: cfg.ProbeInterval.Duration,
		OnChange: func(online bool) {
			klog.InfoS("cloud apiserver reachability changed", "node", cfg.NodeName, "online", online)
		},
	})
	if err != nil {
		return err
	}
	self, err := x509.ParseCertificate(hubCred.Certificate[0])
	if err != nil {
		return fmt.Errorf("hub client certificate: %w", err)
	}
	// What the hub reads for itself (topology rules, its unit's members) it
	// reads through itself, as the hub: cached, so it holds offline and
	// across restarts.
	asSelf := func(agent string) *rest.Config {
		return &rest.Config{
			Host: "https://" + loopback(cfg.ListenAddress), UserAgent: "sitegrid-hub/" + agent,
			TLSClientConfig: rest.TLSClientConfig{CAFile: cfg.ServerCAFile, CertFile: cfg.ClientCertFile, KeyFile: cfg.ClientKeyFile},
		}
	}
	// The topology rules and the health member read core objects with one
	// client, and share one watch of the local node.
	var core rest.Interface
	var localNode toolscache.SharedIndexInformer
	if !cfg.ServiceTopology.Disabled || cfg.Health.UnitKey != "" {
		if core, err = selfclient.Core(asSelf("self")); err != nil {
			return err
		}
		localNode = selfclient.LocalNode(core, cfg.NodeName)
	}
	var rules *topology.Source
	var filter *topology.Filter
	if !cfg.ServiceTopology.Disabled {
		rules = topology.NewSource(cfg.NodeName, core, localNode)
		filter = &topology.Filter{Rules: rules, Components: cfg.ServiceTopology.Components}
		if e := cfg.ServiceTopology.KubernetesEndpoint; e != "" {
			filter.KubernetesEndpoint = netip.MustParseAddrPort(e) // checked by Validate
		}
	}
	p, err := proxy.New(proxy.Config{Upstream: tracker, Transport: asHub, TokenTransport: asToken, Cache: store,
		Impersonable: []proxy.Identity{{User: "system:node:" + cfg.NodeName, Groups: []string{"system:nodes", "system:authenticated"}}},
		Self:         self.Subject.CommonName, Filter: filter})
	if err != nil {
		return err
	}
	hm := newHubMetrics(func() bool { _, online := tracker.Online(); return online }, cfg.CachePath)

	api := &http.Server{
		Addr:              cfg.ListenAddress,
		Handler:           hm.instrument(p),
		ReadHeaderTimeout: 30 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{serving}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clientCAs, MinVersion: tls.VersionTLS12},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	// Ready means the hub answers: from the cloud, or from its cache.
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if _, online := tracker.Online(); online {
			_, _ = w.Write([]byte("ok: online"))
			return
		}
		_, _ = w.Write([]byte("ok: offline, answering from the cache"))
	})
	mux.Handle("/metrics", hm)
	health := &http.Server{Addr: cfg.HealthAddress, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

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
	g.Go(func() error { tracker.Run(gctx); return nil })
	if localNode != nil {
		g.Go(func() error { localNode.Run(gctx.Done()); return nil })
	}
	if rules != nil {
		g.Go(func() error { rules.Run(gctx); return nil })
	}
	if cfg.Health.UnitKey != "" {
		leases, err := selfclient.Leases(asSelf("health"))
		if err != nil {
			return err
		}
		g.Go(func() error {
			return gossip.Run(gctx, gossip.RunConfig{
				Node: cfg.NodeName, UnitKey: cfg.Health.UnitKey, BindAddr: cfg.Health.BindAddress, AdvertiseAddr: cfg.Health.AdvertiseAddress,
				LocalNode: localNode, Core: core, Leases: leases, ReportInterval: cfg.Health.ReportInterval.Duration,
				Online: func() bool { _, online := tracker.Online(); return online },
			})
		})
	}
	g.Go(func() error { return ignoreClosed(api.ServeTLS(apiLn, "", "")) })
	g.Go(func() error { return ignoreClosed(health.Serve(healthLn)) })
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = api.Shutdown(sctx)
		return health.Shutdown(sctx)
	})
	return g.Wait()
}

// loopback is how the hub reaches its own listener.
func loopback(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func loadPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// instrument counts requests by how they were served and times them.
func (m *hubMetrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		m.latency.Update(rec.firstByte.Sub(start).Seconds())
		served := "upstream"
		switch {
		case rec.Header().Get("X-Sitegrid-Hub-Cache") == "offline":
			served = "cache"
		case rec.code >= 400 && rec.Header().Get("Content-Type") == "application/json" && rec.fromHub:
			served = "refused"
		}
		m.served[served].Inc()
	})
}

type recorder struct {
	http.ResponseWriter
	code      int
	firstByte time.Time
	fromHub   bool
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code, r.firstByte = code, time.Now()
		r.fromHub = r.Header().Get("Audit-Id") == "" // the apiserver's answers carry an audit ID
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.WriteHeader(http.StatusOK)
	}
	return r.ResponseWriter.Write(b)
}

// Flush keeps watches streaming through the recorder.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
