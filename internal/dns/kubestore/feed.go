package kubestore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredns/coredns/plugin/kubernetes/object"
	api "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	meta "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
)

// Run lists and watches Services, EndpointSlices and Namespaces with
// client-go's reflectors (relists, bookmarks, backoff and watch-list as
// every informer), until Stop.
func (s *Store) Run() {
	s.running.Store(true)
	defer close(s.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	feeds := []source{
		{"services", s.client.CoreV1().RESTClient(), &api.Service{}, s.serviceFeed()},
		{"namespaces", s.client.CoreV1().RESTClient(), &api.Namespace{}, s.namespaceFeed()},
	}
	if s.endpoints {
		feeds = append(feeds, source{"endpointslices", s.client.DiscoveryV1().RESTClient(), &discovery.EndpointSlice{}, s.sliceFeed()})
	}
	var wg sync.WaitGroup
	for _, f := range feeds {
		lw := cache.NewListWatchFromClient(f.client, f.resource, api.NamespaceAll, fields.Everything())
		r := cache.NewReflectorWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, s.client), f.typ, f.store,
			cache.ReflectorOptions{Name: "sitegrid-dns " + f.resource})
		wg.Go(func() { r.RunWithContext(ctx) })
	}
	<-s.stop
	cancel()
	wg.Wait()
}

// source is one watched resource.
type source struct {
	resource string
	client   cache.Getter
	typ      runtime.Object
	store    cache.ReflectorStore
}

func (s *Store) serviceFeed() *feed[*object.Service] {
	return &feed[*object.Service]{s: s, synced: &s.synced[servicesSynced], convert: object.ToService,
		key: serviceKey, all: s.services, put: s.putService, drop: s.dropService}
}

func (s *Store) namespaceFeed() *feed[*object.Namespace] {
	return &feed[*object.Namespace]{s: s, synced: &s.synced[namespacesSynced], convert: object.ToNamespace,
		key: meta.Object.GetName, all: s.namespaces, put: s.putNamespace, drop: s.dropNamespace}
}

func (s *Store) sliceFeed() *feed[*object.Endpoints] {
	return &feed[*object.Endpoints]{s: s, synced: &s.synced[slicesSynced], convert: toEndpoints,
		key: sliceKey, all: s.slices, put: s.putSlice, drop: s.dropSlice, observe: programmingLatency}
}

// feed is one resource's side of the reflector: it turns what the
// reflector hands it (the API's object, or the plugin's already, from the
// reflector's own watch-list store) into the plugin's object and puts it
// into the store.
type feed[T meta.Object] struct {
	s       *Store
	synced  *atomic.Bool
	convert object.ToFunc
	key     func(meta.Object) string
	all     map[string]T // the store's objects of this resource, by key
	// put and drop change the store's maps (s.mu held) and say whether
	// the zone's records and its external records changed.
	put  func(T) (internal, external bool)
	drop func(key string) (internal, external bool)
	// observe, if set, sees an API object before it is converted.
	observe func(*Store, meta.Object) func()
}

func (f *feed[T]) object(obj any) (T, func(), error) {
	var zero T
	if t, ok := obj.(T); ok {
		return t, nil, nil
	}
	m, ok := obj.(meta.Object)
	if !ok {
		return zero, nil, fmt.Errorf("kubestore: unexpected object %T", obj)
	}
	var after func()
	if f.observe != nil {
		after = f.observe(f.s, m)
	}
	o, err := f.convert(m)
	if err != nil {
		return zero, nil, err
	}
	t, ok := o.(T)
	if !ok {
		return zero, nil, fmt.Errorf("kubestore: %T converted to %T", obj, o)
	}
	return t, after, nil
}

// Transformer converts in the reflector's watch-list store too, so a
// streamed list is never held as whole API objects.
func (f *feed[T]) Transformer() cache.TransformFunc {
	return func(obj any) (any, error) {
		t, after, err := f.object(obj)
		if after != nil {
			after()
		}
		return t, err
	}
}

// Add puts obj into the store.
func (f *feed[T]) Add(obj any) error {
	t, after, err := f.object(obj)
	if err != nil {
		return err
	}
	f.s.mu.Lock()
	internal, external := f.put(t)
	f.s.mu.Unlock()
	f.s.touch(internal, external)
	if after != nil {
		after()
	}
	return nil
}

// Update is Add: put replaces the object of the same key.
func (f *feed[T]) Update(obj any) error { return f.Add(obj) }

// Delete drops obj's key.
func (f *feed[T]) Delete(obj any) error {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, ok := obj.(meta.Object)
	if !ok {
		return fmt.Errorf("kubestore: unexpected object %T", obj)
	}
	f.s.mu.Lock()
	internal, external := f.drop(f.key(m))
	f.s.mu.Unlock()
	f.s.touch(internal, external)
	return nil
}

// Replace makes the store's objects of this resource exactly list: a
// relist after a lost watch drops what was deleted meanwhile.
func (f *feed[T]) Replace(list []any, _ string) error {
	objs := make([]T, 0, len(list))
	afters := []func(){}
	for _, obj := range list {
		t, after, err := f.object(obj)
		if err != nil {
			return err
		}
		objs = append(objs, t)
		if after != nil {
			afters = append(afters, after)
		}
	}
	keep := make(map[string]bool, len(objs))
	var internal, external bool
	f.s.mu.Lock()
	for _, t := range objs {
		keep[f.key(t)] = true
		i, e := f.put(t)
		internal, external = internal || i, external || e
	}
	for k := range f.all {
		if !keep[k] {
			i, e := f.drop(k)
			internal, external = internal || i, external || e
		}
	}
	f.s.mu.Unlock()
	f.s.touch(internal, external)
	for _, after := range afters {
		after()
	}
	f.synced.Store(true)
	return nil
}

// Resync has nothing to do: there is no queue.
func (f *feed[T]) Resync() error { return nil }

// toEndpoints is CoreDNS's conversion, with the address lists cut to their
// length (they grow an address at a time, so up to twice that).
func toEndpoints(o meta.Object) (meta.Object, error) {
	m, err := object.EndpointSliceToEndpoints(o)
	if err != nil {
		return nil, err
	}
	ep := m.(*object.Endpoints)
	for i := range ep.Subsets {
		ep.Subsets[i].Addresses = slices.Clone(ep.Subsets[i].Addresses)
	}
	ep.IndexIP = slices.Clone(ep.IndexIP)
	return ep, nil
}

func serviceKey(o meta.Object) string { return object.ServiceKey(o.GetName(), o.GetNamespace()) }

func sliceKey(o meta.Object) string { return o.GetNamespace() + "/" + o.GetName() }

// programmingLatency records, once an EndpointSlice written by the
// EndpointSlice controller is in the store, how long after its trigger it
// can be answered: CoreDNS's coredns_kubernetes_dns_programming_duration_seconds,
// as its own store records it.
func programmingLatency(s *Store, o meta.Object) func() {
	v, ok := o.GetAnnotations()[api.EndpointsLastChangeTriggerTime]
	if !ok {
		return nil
	}
	tt, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return nil
	}
	key := object.EndpointsKey(o.GetLabels()[discovery.LabelServiceName], o.GetNamespace())
	return func() {
		svcs := s.SvcIndex(key)
		if len(svcs) != 1 {
			return
		}
		kind := "cluster_ip"
		if svcs[0].Headless() {
			kind = "headless_with_selector"
		}
		object.DNSProgrammingLatency.WithLabelValues(kind).Observe(object.DurationSinceFunc(tt).Seconds())
	}
}
