// Package kubestore is sitegrid-dns's store behind CoreDNS's kubernetes
// plugin: the Services, EndpointSlices and Namespaces the plugin answers
// from, listed and watched through the node's hub by client-go's
// reflectors, kept in CoreDNS's own stripped-down objects (object.Service,
// object.Endpoints, object.Namespace) and looked up by plain maps.
//
// CoreDNS's own store keeps the same objects in client-go indexers, one
// per resource, with an index by endpoint IP, Service IP and external IP:
// a set per address, which on 10,000 endpoints was 60 % of the server's
// heap (docs/dns.md, Memory). Here an address maps to the objects holding
// it directly, and the plugin's answers are the same (kubestore_test.go
// asks both stores the same questions).
package kubestore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredns/coredns/plugin/kubernetes"
	"github.com/coredns/coredns/plugin/kubernetes/object"
	api "k8s.io/api/core/v1"
	meta "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
)

// Store answers the kubernetes plugin's questions (its APIConn).
type Store struct {
	client    clientset.Interface
	endpoints bool // false with the plugin's `noendpoints`

	// modified and extModified are the Unix times of the last change to
	// the zone's records and to its external records (the SOA serials).
	modified, extModified atomic.Int64

	mu          sync.RWMutex
	services    map[string]*object.Service // by Index, name.namespace
	svcByIP     multiIndex[object.Service]
	svcByExtIP  multiIndex[object.Service]
	slices      map[string]*object.Endpoints // by the slice's namespace/name
	epByService multiIndex[object.Endpoints]
	epByIP      multiIndex[object.Endpoints]
	namespaces  map[string]*object.Namespace

	synced   [3]atomic.Bool // Services, EndpointSlices, Namespaces
	stop     chan struct{}
	stopOnce sync.Once
	running  atomic.Bool
	done     chan struct{} // closed when Run has returned
}

// the resources' places in synced.
const (
	servicesSynced = iota
	slicesSynced
	namespacesSynced
)

// New returns a store reading through client; endpoints is false when the
// plugin was told `noendpoints` (no EndpointSlices are watched). Run starts
// it.
func New(client clientset.Interface, endpoints bool) *Store {
	s := &Store{
		client:      client,
		endpoints:   endpoints,
		services:    map[string]*object.Service{},
		svcByIP:     newMultiIndex[object.Service](),
		svcByExtIP:  newMultiIndex[object.Service](),
		slices:      map[string]*object.Endpoints{},
		epByService: newMultiIndex[object.Endpoints](),
		epByIP:      newMultiIndex[object.Endpoints](),
		namespaces:  map[string]*object.Namespace{},
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	if !endpoints {
		s.synced[slicesSynced].Store(true)
	}
	return s
}

// HasSynced says whether every watched resource has been listed.
func (s *Store) HasSynced() bool {
	return s.synced[servicesSynced].Load() && s.synced[slicesSynced].Load() && s.synced[namespacesSynced].Load()
}

// Stop ends the watches and, if Run runs, waits until it has returned (a
// reload's new store then starts after the old one's reflectors are gone).
func (s *Store) Stop() error {
	s.stopOnce.Do(func() { close(s.stop) })
	if s.running.Load() {
		<-s.done
	}
	return nil
}

// Modified is the Unix time of the last change to the records of mode
// (multicluster records are not kept here: -1, as CoreDNS's own store
// says of a mode it does not know).
func (s *Store) Modified(mode kubernetes.ModifiedMode) int64 {
	switch mode {
	case kubernetes.ModifiedInternal:
		return s.modified.Load()
	case kubernetes.ModifiedExternal:
		return s.extModified.Load()
	}
	return -1
}

func (s *Store) touch(internal, external bool) {
	now := time.Now().Unix()
	if internal {
		s.modified.Store(now)
	}
	if external {
		s.extModified.Store(now)
	}
}

// ServiceList is every Service.
func (s *Store) ServiceList() []*object.Service { return all(s, s.services) }

// EndpointsList is every EndpointSlice, as the plugin's Endpoints.
func (s *Store) EndpointsList() []*object.Endpoints { return all(s, s.slices) }

// all lists a map's objects under the store's lock.
func all[T any](s *Store, m map[string]*T) []*T {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// SvcIndex is the Service of key name.namespace.
func (s *Store) SvcIndex(key string) []*object.Service {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if svc, ok := s.services[key]; ok {
		return []*object.Service{svc}
	}
	return nil
}

// SvcIndexReverse are the Services with cluster IP ip.
func (s *Store) SvcIndexReverse(ip string) []*object.Service { return lookup(s, s.svcByIP, ip) }

// SvcExtIndexReverse are the Services with external IP ip.
func (s *Store) SvcExtIndexReverse(ip string) []*object.Service {
	return lookup(s, s.svcByExtIP, ip)
}

// EpIndex are the EndpointSlices of the Service of key name.namespace.
func (s *Store) EpIndex(key string) []*object.Endpoints { return lookup(s, s.epByService, key) }

// EpIndexReverse are the EndpointSlices with an endpoint at ip.
func (s *Store) EpIndexReverse(ip string) []*object.Endpoints { return lookup(s, s.epByIP, ip) }

// lookup reads an index under the store's lock.
func lookup[T any](s *Store, index multiIndex[T], key string) []*T {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return index.get(key)
}

var errNamespaceNotFound = errors.New("namespace not found")

// GetNamespaceByName is the Namespace name, or an error if there is none.
func (s *Store) GetNamespaceByName(name string) (*object.Namespace, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if ns, ok := s.namespaces[name]; ok {
		return ns, nil
	}
	return nil, errNamespaceNotFound
}

// GetNodeByName reads the Node name (the plugin asks only for federation).
func (s *Store) GetNodeByName(ctx context.Context, name string) (*api.Node, error) {
	return s.client.CoreV1().Nodes().Get(ctx, name, meta.GetOptions{})
}

// The plugin's multicluster and verified-pod records need stores this one
// does not keep; Setup refuses those options, so these stay empty.

// PodIndex is empty: `pods verified` is refused (pods insecure and
// disabled never ask).
func (s *Store) PodIndex(string) []*object.Pod { return nil }

// ServiceImportList is empty: `multicluster` is refused.
func (s *Store) ServiceImportList() []*object.ServiceImport { return nil }

// SvcImportIndex is empty: `multicluster` is refused.
func (s *Store) SvcImportIndex(string) []*object.ServiceImport { return nil }

// McEpIndex is empty: `multicluster` is refused.
func (s *Store) McEpIndex(string) []*object.MultiClusterEndpoints { return nil }
