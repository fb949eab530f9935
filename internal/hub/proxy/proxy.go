// Package proxy is the edge hub's API front: node components talk to it as
// they would to the apiserver, and it forwards to the cloud while the cloud
// is reachable and answers from its cache when it is not.
//
// One request takes one path, a stage per file:
//   - identity.go: who the caller is (a Caller), and whether the hub serves it;
//   - route.go: the request parsed once into a request value: its cache
//     key, whether it asks for a Table, its topology transform, whether it
//     is a kubelet write the hub answers offline;
//   - token.go: kubelets' service-account tokens kept and served offline;
//   - offlinewrite.go, podstatus.go: the kubelet writes answered offline
//     (Lease, node status, registration; pod statuses, kept and written to
//     the cloud when it is back);
//   - online.go: forwarded to the cloud, the answer stored on its way back;
//   - offline.go: served without the cloud, by one function, whether the
//     hub knew the cloud was gone or the request was the one to find out;
//   - watch.go: watches kept in the cache and held open offline.
//
// Each request ends in a Served: where its answer came from, for metrics.
package proxy

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/topology"
	"github.com/sitegrid/sitegrid/internal/hub/upstream"
)

// Config configures a Proxy.
type Config struct {
	// Upstream says which apiserver to use, and hears how requests went.
	Upstream *upstream.Tracker
	// Transport reaches the apiservers with the hub's own client
	// certificate, for impersonating certificate clients.
	Transport http.RoundTripper
	// TokenTransport reaches the apiservers without any client certificate,
	// for passing bearer tokens through: the apiserver checks a client
	// certificate before a token, so a token sent with the hub's
	// certificate would act as the hub.
	TokenTransport http.RoundTripper
	// Impersonable are the certificate identities the hub serves. A
	// certificate's groups must be a subset of the identity's groups.
	Impersonable []Identity
	// Cache, when set, keeps GET and LIST answers and serves them while the
	// cloud is unreachable.
	Cache *cache.Store
	// Self is the user of the hub's own credential: the hub's own reads
	// (its topology rules) come through the proxy, to be cached like every
	// other, and go upstream as the hub.
	Self string
	// Filter, when set, confines what node components see of Services'
	// endpoints to the node's share (service topology).
	Filter *topology.Filter
	// Now is the clock offline answers are judged by (token expiry); nil
	// is time.Now.
	Now func() time.Time
}

// Proxy forwards node components' API requests.
type Proxy struct {
	cfg Config
	// keys orders the cache writes of one key.
	keys keyLocks
	// release returns memory to the system after large lists.
	release memoryReleaser
}

// New builds a Proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Upstream == nil || cfg.Transport == nil || cfg.TokenTransport == nil {
		return nil, errors.New("proxy: Upstream, Transport and TokenTransport are required")
	}
	p := &Proxy{cfg: cfg}
	p.release = memoryReleaser{release: p.freeMemory, after: 2 * time.Second}
	return p, nil
}

func (p *Proxy) now() time.Time {
	if p.cfg.Now != nil {
		return p.cfg.Now()
	}
	return time.Now()
}

// Served is where a request's answer came from.
type Served int

const (
	// ServedUpstream is an answer of the cloud apiserver, whatever its
	// status.
	ServedUpstream Served = iota
	// ServedCache is an answer of the hub from its cache, without the
	// cloud: a cache hit, a watch held open, a kubelet write answered
	// offline.
	ServedCache
	// ServedRefused is the hub's own refusal: a caller it does not serve,
	// or a request it cannot answer without the cloud (a miss).
	ServedRefused
)

// String is the value of the metrics' served label.
func (s Served) String() string {
	switch s {
	case ServedCache:
		return "cache"
	case ServedRefused:
		return "refused"
	}
	return "upstream"
}

// ServeHTTP serves one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.Serve(w, r) }

// Serve serves one request and says where its answer came from.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request) Served {
	caller, refusal := p.authenticate(r)
	if refusal != nil {
		writeStatus(w, refusal.code, refusal.reason, refusal.message)
		return ServedRefused
	}
	req := p.route(r, caller)
	endpoint, online := p.cfg.Upstream.Online()
	if !online {
		return p.serveOffline(w, req, nil)
	}
	return p.forward(w, req, endpoint)
}

// writeStatus answers with a Kubernetes Status, so clients report the
// reason as they would the apiserver's.
func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	st := metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
		Code: int32(code), Reason: reason, Message: msg}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}
