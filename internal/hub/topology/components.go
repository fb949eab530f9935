package topology

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/sitegrid/sitegrid/internal/hub/apirequest"
)

// DefaultComponents are the clients whose view is filtered: the node's
// service proxy and DNS (CoreDNS names itself in-cluster; with a kubeconfig
// its client is the binary's, sitegrid-dns).
var DefaultComponents = []string{"kube-proxy", "coredns", "sitegrid-dns"}

// Filter applies Rules to the reads of the configured components.
type Filter struct {
	Rules Rules
	// Components are matched against the start of the User-Agent
	// ("kube-proxy/v1.37.1 (linux/amd64) ..."), as OpenYurt's yurthub does:
	// the hub passes tokens through and cannot name their owners, and a
	// client that claims to be kube-proxy only ever gets less.
	Components []string
	// KubernetesEndpoint, when valid, replaces the endpoints of the
	// default/kubernetes Service with this address: the hub itself,
	// reachable from the node's pods, so in-cluster clients on the node also
	// go through the hub and keep working offline.
	KubernetesEndpoint netip.AddrPort
}

// Transform filters the objects of one response, in JSON.
type Transform struct {
	// Apply filters one object.
	Apply     func([]byte) ([]byte, error)
	serviceOf func([]byte) (namespace, service string, err error)
	rules     Rules
}

// Affected reports whether a change of the rules concerns an object.
func (t *Transform) Affected(raw []byte, c Change) bool {
	ns, svc, err := t.serviceOf(raw)
	return err == nil && svc != "" && c.Affects(ns, svc)
}

// Notifier is Rules that say when they change.
type Notifier interface {
	Subscribe() (signal <-chan struct{}, next func() Change, cancel func())
}

// Subscribe follows rule changes, if the rules tell them.
func (t *Transform) Subscribe() (signal <-chan struct{}, next func() Change, cancel func(), ok bool) {
	n, ok := t.rules.(Notifier)
	if !ok {
		return nil, nil, nil, false
	}
	signal, next, cancel = n.Subscribe()
	return signal, next, cancel, true
}

// Syncer is Rules that can say when they are known.
type Syncer interface {
	WaitSynced(ctx context.Context) bool
}

// WaitReady waits, up to timeout, until the rules are known: a component
// that lists before the hub has read the Services' keys would otherwise get
// their endpoints unfiltered. If they stay unknown (the hub started offline
// with nothing cached), the answer goes out with what is known: Services
// not yet seen pass unfiltered.
func (t *Transform) WaitReady(ctx context.Context, timeout time.Duration) {
	if s, ok := t.rules.(Syncer); ok {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		s.WaitSynced(ctx)
	}
}

// For returns the transform for r's objects, or nil if r is not a read of
// EndpointSlices or Endpoints by a filtered component.
func (f *Filter) For(r *http.Request) *Transform {
	if f == nil {
		return nil
	}
	info, err := apirequest.Parse(r)
	if err != nil {
		return nil
	}
	return f.ForRead(r.UserAgent(), info)
}

// ForRead is For of a request parsed already: a list or watch of
// EndpointSlices or Endpoints by a filtered component.
func (f *Filter) ForRead(userAgent string, info *apirequest.Info) *Transform {
	if f == nil || !info.IsResourceRequest || (info.Verb != "list" && info.Verb != "watch") || info.Subresource != "" || !f.filtered(userAgent) {
		return nil
	}
	switch {
	case info.APIGroup == "discovery.k8s.io" && info.APIVersion == "v1" && info.Resource == "endpointslices":
		return &Transform{Apply: f.withKubernetes(sliceService, kubernetesSlice, func(raw []byte) ([]byte, error) { return EndpointSlice(raw, f.Rules) }),
			serviceOf: sliceService, rules: f.Rules}
	case info.APIGroup == "" && info.APIVersion == "v1" && info.Resource == "endpoints":
		return &Transform{Apply: f.withKubernetes(endpointsService, kubernetesEndpoints, func(raw []byte) ([]byte, error) { return Endpoints(raw, f.Rules) }),
			serviceOf: endpointsService, rules: f.Rules}
	}
	return nil
}

func (f *Filter) filtered(userAgent string) bool {
	name, _, _ := strings.Cut(userAgent, "/")
	for _, c := range f.Components {
		if strings.EqualFold(name, c) {
			return true
		}
	}
	return false
}

// withKubernetes puts the default/kubernetes rewrite in front of filter.
func (f *Filter) withKubernetes(serviceOf func([]byte) (string, string, error), rewrite func([]byte, netip.AddrPort) ([]byte, error), filter func([]byte) ([]byte, error)) func([]byte) ([]byte, error) {
	if !f.KubernetesEndpoint.IsValid() {
		return filter
	}
	return func(raw []byte) ([]byte, error) {
		if ns, svc, err := serviceOf(raw); err == nil && ns == "default" && svc == "kubernetes" {
			return rewrite(raw, f.KubernetesEndpoint)
		}
		return filter(raw)
	}
}
