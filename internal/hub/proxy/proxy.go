// Package proxy is the edge hub's API front: node components talk to it as
// they would to the apiserver, and it forwards to the cloud while the cloud
// is reachable.
//
// Identity: a client never gains access it would not have directly.
//   - A bearer token is passed through unchanged: the apiserver sees the
//     client itself.
//   - A client certificate of the cluster CA ends at the hub's TLS, so the
//     hub forwards with its own credential and impersonates the certificate's
//     user and groups. The hub accepts only the identities it is configured
//     for (this node's kubelet), and RBAC lets its credential impersonate
//     exactly those, nothing else.
//   - A request with neither is refused; so is a certificate client that
//     sends impersonation headers of its own (it would borrow the hub's
//     right to impersonate).
package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/topology"
	"github.com/sitegrid/sitegrid/internal/hub/upstream"
)

// Identity is a user the hub may impersonate for certificate clients.
type Identity struct {
	User   string
	Groups []string
}

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
}

// Proxy forwards node components' API requests.
type Proxy struct {
	cfg Config
	// asHub forwards with the hub's certificate; asToken with none.
	asHub, asToken *httputil.ReverseProxy
	// keys orders the cache writes of one key.
	keys keyLocks
	// release returns memory to the system after large lists.
	release memoryReleaser
}

type ctxKey struct{}

// keyCtx carries a cacheable request's key to the response; watchCtx a
// watch's list key.
type (
	keyCtx   struct{}
	watchCtx struct{}
)

// New builds a Proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Upstream == nil || cfg.Transport == nil || cfg.TokenTransport == nil {
		return nil, errors.New("proxy: Upstream, Transport and TokenTransport are required")
	}
	p := &Proxy{cfg: cfg}
	p.release = memoryReleaser{release: p.freeMemory, after: 2 * time.Second}
	p.asHub, p.asToken = p.reverseProxy(cfg.Transport), p.reverseProxy(cfg.TokenTransport)
	return p, nil
}

func (p *Proxy) reverseProxy(transport http.RoundTripper) *httputil.ReverseProxy {
	tracker := p.cfg.Upstream
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			target := r.In.Context().Value(ctxKey{}).(*url.URL)
			r.SetURL(target)
			r.Out.Host = target.Host
		},
		Transport: transport,
		// Watches and logs stream: flush every write at once.
		FlushInterval: -1,
		BufferPool:    copyBuffers,
		ModifyResponse: func(resp *http.Response) error {
			tracker.Report(endpointOf(resp.Request.URL), nil)
			k, watch := resp.Request.Context().Value(watchCtx{}).(cache.Key)
			if watch && resp.StatusCode == http.StatusOK {
				p.teeWatch(resp, k)
			} else if err := p.store(resp); err != nil {
				return err
			}
			// The cache keeps what the cloud said; a filtered component sees
			// its node's share of it.
			if t, ok := resp.Request.Context().Value(filterCtx{}).(*topology.Transform); ok && resp.StatusCode == http.StatusOK && isJSON(resp) {
				if watch {
					resp.Body = p.filteredWatch(resp.Body, k, t)
				} else {
					resp.Body = filteredList(resp.Body, t)
				}
				resp.Header.Del("Content-Length")
				resp.ContentLength = -1
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() == nil { // not the client going away
				tracker.Report(endpointOf(r.URL), err)
			}
			// The first request to find the cloud gone is answered from the
			// cache too, not only the ones after the tracker noticed.
			t, _ := r.Context().Value(filterCtx{}).(*topology.Transform)
			if k, ok := r.Context().Value(keyCtx{}).(cache.Key); ok && p.serveCached(w, k, t) {
				return
			}
			if k, ok := r.Context().Value(watchCtx{}).(cache.Key); ok && r.Context().Err() == nil && p.holdWatch(w, r, k, t) {
				return
			}
			writeStatus(w, http.StatusBadGateway, metav1.StatusReasonServiceUnavailable, fmt.Sprintf("the cloud apiserver did not answer: %v", err))
		},
	}
}

func endpointOf(u *url.URL) string { return u.Scheme + "://" + u.Host }

// impersonationHeaders are never accepted from certificate clients.
var impersonationHeaders = []string{"Impersonate-User", "Impersonate-Group", "Impersonate-Uid"}

// ServeHTTP authenticates the caller, chooses how to present it upstream,
// and forwards.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	out := r.Clone(r.Context())
	forward := p.asHub
	identity := ""
	switch {
	case r.TLS != nil && len(r.TLS.VerifiedChains) > 0:
		cert := r.TLS.VerifiedChains[0][0]
		id := Identity{User: cert.Subject.CommonName, Groups: cert.Subject.Organization}
		if hasImpersonation(r.Header) {
			writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, "the hub does not forward impersonation requests of certificate clients")
			return
		}
		self := p.cfg.Self != "" && id.User == p.cfg.Self
		if !self && !p.allowed(id) {
			writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, fmt.Sprintf("the hub on this node does not serve user %q", id.User))
			return
		}
		// Groups are part of the identity: answers obtained with more groups
		// must not serve a certificate with fewer.
		identity = "user:" + id.User
		if groups := slices.Sorted(slices.Values(id.Groups)); len(groups) > 0 {
			identity += "|" + strings.Join(groups, ",")
		}
		out.Header.Del("Authorization")
		if !self { // the hub's own reads go as the hub
			out.Header.Set("Impersonate-User", id.User)
			for _, g := range id.Groups {
				out.Header.Add("Impersonate-Group", g)
			}
		}
	case strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "):
		// Passed through: the apiserver authenticates and authorizes the
		// token's owner, and applies its own impersonation rules.
		forward = p.asToken
		identity = tokenIdentity(r.Header.Get("Authorization"))
	default:
		writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "present a client certificate of the cluster CA or a bearer token")
		return
	}
	transform := p.cfg.Filter.For(r)
	if transform != nil {
		transform.WaitReady(r.Context(), 10*time.Second)
		out = out.WithContext(context.WithValue(out.Context(), filterCtx{}, transform))
	}
	key, cacheable := p.cacheKey(identity, r)
	wkey, watched := p.watchKey(identity, r)
	// A read asking for a Table (kubectl get) goes up as asked and its answer
	// is kept as a Table; offline, a Table seen before is served, else the
	// objects (kubectl prints those itself, with fewer columns).
	tableKey, table := key, cacheable && transform == nil && wantsTable(r)
	tableKey.Verb = cache.VerbTable
	endpoint, online := p.cfg.Upstream.Online()
	if !online {
		if table && p.serveCached(w, tableKey, nil) {
			return
		}
		if cacheable && p.serveCached(w, key, transform) {
			return
		}
		if watched && p.holdWatch(w, r, wkey, transform) {
			return
		}
		if p.offlineWrite(w, r, identity) {
			return
		}
		msg := "the cloud apiserver is unreachable from this node, and the hub has no cached answer"
		if r.Method != http.MethodGet {
			msg = "the cloud apiserver is unreachable from this node; the hub cannot accept this " + r.Method + " offline (nothing was written)"
		}
		writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, msg)
		return
	}
	if cacheable || watched {
		// JSON answers can be stored and rebuilt; clients of the apiserver
		// accept JSON whatever else they prefer. Without the client's
		// Accept-Encoding, the transport asks for gzip itself and hands the
		// hub the plain body.
		if !table {
			out.Header.Set("Accept", "application/json")
		}
		out.Header.Del("Accept-Encoding")
	}
	switch {
	case table:
		out = out.WithContext(context.WithValue(out.Context(), keyCtx{}, tableKey))
	case cacheable:
		out = out.WithContext(context.WithValue(out.Context(), keyCtx{}, key))
	}
	if watched {
		out = out.WithContext(context.WithValue(out.Context(), watchCtx{}, wkey))
	}
	target, err := url.Parse(endpoint)
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, err.Error())
		return
	}
	forward.ServeHTTP(w, out.WithContext(withTarget(out, target)))
}

// wantsTable reports a read that asks for a server-side printed Table in
// JSON first (kubectl get does).
func wantsTable(r *http.Request) bool {
	first, _, _ := strings.Cut(r.Header.Get("Accept"), ",")
	mt, params, err := mime.ParseMediaType(first)
	return err == nil && mt == "application/json" && params["as"] == "Table"
}

func (p *Proxy) allowed(id Identity) bool {
	for _, ok := range p.cfg.Impersonable {
		if ok.User != id.User {
			continue
		}
		for _, g := range id.Groups {
			if !slices.Contains(ok.Groups, g) {
				return false
			}
		}
		return true
	}
	return false
}

func hasImpersonation(h http.Header) bool {
	for k := range h {
		for _, ih := range impersonationHeaders {
			if strings.EqualFold(k, ih) || strings.HasPrefix(strings.ToLower(k), "impersonate-extra-") {
				return true
			}
		}
	}
	return false
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

func withTarget(r *http.Request, target *url.URL) context.Context {
	return context.WithValue(r.Context(), ctxKey{}, target)
}
