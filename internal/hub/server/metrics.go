package server

import (
	"net/http"
	"os"

	"github.com/VictoriaMetrics/metrics"

	"github.com/sitegrid/sitegrid/internal/hub/certs"
	"github.com/sitegrid/sitegrid/internal/hub/proxy"
	"github.com/sitegrid/sitegrid/internal/tunnel/agent"
)

// hubMetrics are the hub's Prometheus metrics, written in the Prometheus
// text format with HELP and TYPE lines by VictoriaMetrics' lightweight
// metrics package: Prometheus' client_golang brings the protobuf runtime
// with it and cost 2.2 MiB, 13 %, of the hub's resident memory
// (docs/hub.md), on every edge node.
type hubMetrics struct {
	set *metrics.Set
	// served counts requests by how they were served: upstream (from the
	// cloud), cache (from the cache: a hit) or refused (offline, nothing
	// cached: a miss).
	served  map[proxy.Served]*metrics.Counter
	latency *metrics.Summary
	// renewalFailures count failed certificate renewals by certificate.
	renewalFailures map[string]certs.Counter
}

func newHubMetrics(online func() bool, cachePath string) *hubMetrics {
	metrics.ExposeMetadata(true)
	s := metrics.NewSet()
	m := &hubMetrics{set: s, served: map[proxy.Served]*metrics.Counter{}}
	for _, how := range []proxy.Served{proxy.ServedUpstream, proxy.ServedCache, proxy.ServedRefused} {
		m.served[how] = s.NewCounter(`sitegrid_hub_requests_total{served="` + how.String() + `"}`)
	}
	// Time to the response's headers (watches: to the first byte), over the
	// last five minutes.
	m.latency = s.NewSummary("sitegrid_hub_request_duration_seconds")
	s.NewGauge("sitegrid_hub_upstream_online", func() float64 {
		if online() {
			return 1
		}
		return 0
	})
	s.NewGauge("sitegrid_hub_cache_size_bytes", func() float64 {
		fi, err := os.Stat(cachePath)
		if err != nil {
			return 0
		}
		return float64(fi.Size())
	})
	// How often renewing the hub's certificates failed (offline, or a CSR
	// not approved in time).
	m.renewalFailures = map[string]certs.Counter{}
	for _, name := range certificateNames {
		m.renewalFailures[name] = s.NewCounter(`sitegrid_hub_certificate_renewal_failures_total{certificate="` + name + `"}`)
	}
	return m
}

var certificateNames = []string{"client", "serving"}

// watchCertificates publishes when the hub's certificates expire.
func (m *hubMetrics) watchCertificates(c *certs.Certificates) {
	for _, name := range certificateNames {
		m.set.NewGauge(`sitegrid_hub_certificate_expiration_timestamp_seconds{certificate="`+name+`"}`, func() float64 {
			return float64(c.Expiry(name).Unix())
		})
	}
}

// ServeHTTP writes the hub's metrics, then the Go runtime's and the
// process's (go_*, process_*).
func (m *hubMetrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m.set.WritePrometheus(w)
	metrics.WriteProcessMetrics(w)
}

// watchTunnel exposes the tunnel agent's state.
func (m *hubMetrics) watchTunnel(a *agent.Agent) {
	m.set.NewGauge("sitegrid_hub_tunnel_connected", func() float64 {
		if a.Connected() != "" {
			return 1
		}
		return 0
	})
	m.set.NewGauge("sitegrid_hub_tunnel_streams", func() float64 { return float64(a.Streams()) })
}
