package topology

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/hub/selfclient"
)

// Source knows what Keep needs: the local node's labels, the topology keys
// of the Services that have them, and, per key, the names of the nodes
// sharing the local node's value. It never holds the cluster's nodes: per
// key it watches only the nodes with the local value (its own unit), and of
// Services only their topology keys.
//
// Its client talks to the hub itself, as the hub's own identity, so what it
// reads is cached like every answer: the rules hold offline and after a
// restart offline.
type Source struct {
	node   string
	client rest.Interface
	// localNode informs of the local node (selfclient.LocalNode), run by
	// the caller.
	localNode toolscache.SharedIndexInformer

	mu       sync.RWMutex
	synced   bool
	local    map[string]string
	services map[string][]string            // "namespace/name" -> keys
	keyUse   map[string]int                 // key -> Services using it
	members  map[string]map[string]struct{} // key -> node names with the local value
	// memberWatch stops the node watch of a key; memberValue is the value
	// it selects.
	memberWatch  map[string]context.CancelFunc
	memberValue  map[string]string
	memberSynced map[string]bool

	subs subscribers
}

// Change says whose endpoints the rules now treat differently: the named
// Services ("namespace/name"), or every filtered Service.
type Change struct {
	All      bool
	Services map[string]bool
}

// Affects reports whether a Service is concerned.
func (c Change) Affects(namespace, service string) bool {
	return c.All || c.Services[namespace+"/"+service]
}

func (c Change) merge(o Change) Change {
	if c.All || o.All {
		return Change{All: true}
	}
	out := Change{Services: map[string]bool{}}
	for _, m := range []map[string]bool{c.Services, o.Services} {
		for k := range m {
			out.Services[k] = true
		}
	}
	return out
}

// subscribers hands changes to the open filtered watches; a slow one gets
// its pending changes merged, never blocks the rules.
type subscribers struct {
	mu   sync.Mutex
	next int
	subs map[int]*subscriber
}

type subscriber struct {
	ch      chan struct{}
	mu      sync.Mutex
	pending *Change
}

// Next returns the changes since the last call.
func (s *subscriber) Next() Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil { // a signal whose change an earlier call took
		return Change{}
	}
	c := *s.pending
	s.pending = nil
	return c
}

func (b *subscribers) publish(c Change) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.subs {
		s.mu.Lock()
		if s.pending == nil {
			s.pending = &c
		} else {
			merged := s.pending.merge(c)
			s.pending = &merged
		}
		s.mu.Unlock()
		select {
		case s.ch <- struct{}{}:
		default:
		}
	}
}

// Subscribe returns a channel that signals rule changes (read them with
// next) and a function that ends the subscription.
func (s *Source) Subscribe() (<-chan struct{}, func() Change, func()) {
	s.subs.mu.Lock()
	defer s.subs.mu.Unlock()
	if s.subs.subs == nil {
		s.subs.subs = map[int]*subscriber{}
	}
	id := s.subs.next
	s.subs.next++
	sub := &subscriber{ch: make(chan struct{}, 1)}
	s.subs.subs[id] = sub
	return sub.ch, sub.Next, func() {
		s.subs.mu.Lock()
		defer s.subs.mu.Unlock()
		delete(s.subs.subs, id)
	}
}

// NewSource returns rules for node, read through client (a core/v1 client,
// selfclient.Core), with the local node from local (selfclient.LocalNode,
// which the caller runs).
func NewSource(node string, client rest.Interface, local toolscache.SharedIndexInformer) *Source {
	return &Source{node: node, client: client, localNode: local, services: map[string][]string{}, keyUse: map[string]int{},
		members: map[string]map[string]struct{}{}, memberWatch: map[string]context.CancelFunc{}, memberValue: map[string]string{},
		memberSynced: map[string]bool{}}
}

// Filters implements Rules.
func (s *Source) Filters(namespace, service string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.services[namespace+"/"+service]) > 0
}

// Keep implements Rules: the endpoint's node must share the local node's
// value of every key. Until the rules are known, only node-local endpoints
// are kept: the local node is in its own unit whatever the unit is.
func (s *Source) Keep(namespace, service, node string) bool {
	if node == s.node {
		return true
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.synced {
		return false
	}
	for _, key := range s.services[namespace+"/"+service] {
		if key == HostnameKey {
			return false
		}
		if _, ok := s.local[key]; !ok {
			continue // the local node is in no group of this key: not confined by it
		}
		if _, ok := s.members[key][node]; !ok {
			return false
		}
	}
	return true
}

// Run watches until ctx ends.
func (s *Source) Run(ctx context.Context) {
	nodesSeen, _ := s.localNode.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.setLocal(ctx, o.(*selfclient.Node).Labels) },
		UpdateFunc: func(_, o any) { s.setLocal(ctx, o.(*selfclient.Node).Labels) },
	})
	services := selfclient.Informer(s.client, "services", metav1.NamespaceAll, &selfclient.Service{}, nil)
	// Of a Service only its topology keys matter: nothing else is kept.
	_ = services.SetTransform(keepMeta(func(m *metav1.ObjectMeta) {
		keep := map[string]string{}
		for _, a := range []string{AnnotationSuperEdge, AnnotationOpenYurt} {
			if v, ok := m.Annotations[a]; ok {
				keep[a] = v
			}
		}
		m.Annotations, m.Labels = keep, nil
	}))
	servicesSeen, _ := services.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.setService(ctx, o.(*selfclient.Service)) },
		UpdateFunc: func(_, o any) { s.setService(ctx, o.(*selfclient.Service)) },
		DeleteFunc: func(o any) {
			if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if svc, ok := o.(*selfclient.Service); ok {
				s.dropService(ctx, svc.Namespace+"/"+svc.Name)
			}
		},
	})
	go services.Run(ctx.Done())
	// Synced once the handlers, not only the stores, have seen every object.
	if toolscache.WaitForCacheSync(ctx.Done(), nodesSeen.HasSynced, servicesSeen.HasSynced) && s.waitMembers(ctx) {
		s.mu.Lock()
		s.synced = true
		s.mu.Unlock()
		klog.InfoS("service topology rules synced", "node", s.node, "services", s.filteredServices())
	}
	<-ctx.Done()
	s.mu.Lock()
	for _, stop := range s.memberWatch {
		stop()
	}
	s.mu.Unlock()
}

func (s *Source) filteredServices() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.services)
}

// waitMembers waits until every unit's node watch has listed.
func (s *Source) waitMembers(ctx context.Context) bool {
	for {
		s.mu.RLock()
		done := true
		for k := range s.memberWatch {
			done = done && s.memberSynced[k]
		}
		s.mu.RUnlock()
		if done {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// keepMeta returns an informer transform that keeps only an object's name,
// namespace, labels and annotations, trimmed by trim: the informers' stores
// hold nothing else (not even resource versions, which the reflector reads
// from the events themselves).
func keepMeta(trim func(*metav1.ObjectMeta)) toolscache.TransformFunc {
	meta := func(m *metav1.ObjectMeta) metav1.ObjectMeta {
		out := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, Labels: m.Labels, Annotations: m.Annotations}
		trim(&out)
		return out
	}
	return func(o any) (any, error) {
		switch obj := o.(type) {
		case *selfclient.Node:
			return &selfclient.Node{ObjectMeta: meta(&obj.ObjectMeta)}, nil
		case *selfclient.Service:
			return &selfclient.Service{ObjectMeta: meta(&obj.ObjectMeta)}, nil
		}
		return o, nil
	}
}

func (s *Source) setLocal(ctx context.Context, l map[string]string) {
	s.mu.Lock()
	changed := !maps.Equal(s.local, l)
	s.local = l
	s.mu.Unlock()
	s.watchMembers(ctx)
	if changed {
		s.subs.publish(Change{All: true})
	}
}

func (s *Source) setService(ctx context.Context, svc *selfclient.Service) {
	keys, err := KeysOf(svc.Annotations)
	if err != nil {
		klog.ErrorS(err, "Service not filtered", "service", klog.KObj(svc))
	}
	name := svc.Namespace + "/" + svc.Name
	if len(keys) == 0 {
		s.dropService(ctx, name)
		return
	}
	s.mu.Lock()
	changed := !slices.Equal(s.services[name], keys)
	if changed {
		s.countKeys(s.services[name], -1)
		s.countKeys(keys, +1)
		s.services[name] = keys
	}
	s.mu.Unlock()
	if changed {
		s.watchMembers(ctx)
		s.subs.publish(Change{Services: map[string]bool{name: true}})
	}
}

func (s *Source) dropService(ctx context.Context, name string) {
	s.mu.Lock()
	keys, had := s.services[name]
	s.countKeys(keys, -1)
	delete(s.services, name)
	s.mu.Unlock()
	if had {
		s.watchMembers(ctx)
		s.subs.publish(Change{Services: map[string]bool{name: true}})
	}
}

// countKeys adds delta to the use count of keys; s.mu is held.
func (s *Source) countKeys(keys []string, delta int) {
	for _, k := range keys {
		if s.keyUse[k] += delta; s.keyUse[k] <= 0 {
			delete(s.keyUse, k)
		}
	}
}

// watchMembers keeps one node watch per key in use, selecting the local
// node's value of it.
func (s *Source) watchMembers(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[string]string{}
	for k := range s.keyUse {
		if v, ok := s.local[k]; ok && k != HostnameKey {
			want[k] = v
		}
	}
	for k, stop := range s.memberWatch {
		if v, ok := want[k]; !ok || v != s.memberValue[k] {
			stop()
			delete(s.memberWatch, k)
			delete(s.memberValue, k)
			delete(s.memberSynced, k)
			delete(s.members, k)
		}
	}
	for k, v := range want {
		if _, ok := s.memberWatch[k]; ok {
			continue
		}
		wctx, stop := context.WithCancel(ctx)
		s.memberWatch[k], s.memberValue[k] = stop, v
		s.members[k] = map[string]struct{}{}
		go s.runMembers(wctx, k, v)
	}
}

// runMembers watches the nodes whose label key has value v.
func (s *Source) runMembers(ctx context.Context, key, value string) {
	sel := labels.SelectorFromSet(labels.Set{key: value}).String()
	inf := selfclient.Informer(s.client, "nodes", metav1.NamespaceAll, &selfclient.Node{}, func(o *metav1.ListOptions) { o.LabelSelector = sel })
	_ = inf.SetTransform(keepMeta(func(m *metav1.ObjectMeta) { m.Labels, m.Annotations = nil, nil }))
	set := func(name string, in bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.memberValue[key] != value || s.members[key] == nil {
			return // this watch was replaced
		}
		_, had := s.members[key][name]
		if in {
			s.members[key][name] = struct{}{}
		} else {
			delete(s.members[key], name)
		}
		if had != in {
			defer s.subs.publish(Change{All: true})
		}
	}
	seen, _ := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { set(o.(*selfclient.Node).Name, true) },
		DeleteFunc: func(o any) {
			if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if n, ok := o.(*selfclient.Node); ok {
				set(n.Name, false)
			}
		},
	})
	klog.V(2).InfoS("watching the nodes that share a topology value", "node", s.node, "selector", sel)
	go inf.Run(ctx.Done())
	if toolscache.WaitForCacheSync(ctx.Done(), seen.HasSynced) {
		s.mu.Lock()
		if s.memberValue[key] == value {
			s.memberSynced[key] = true
		}
		s.mu.Unlock()
	}
	<-ctx.Done()
}

// WaitSynced waits until the rules are known or ctx ends.
func (s *Source) WaitSynced(ctx context.Context) bool {
	for {
		s.mu.RLock()
		synced := s.synced
		s.mu.RUnlock()
		if synced {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}
