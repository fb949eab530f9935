package gossip

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/hub/selfclient"
	"k8s.io/utils/ptr"

	"github.com/sitegrid/sitegrid/internal/health"
)

// RunConfig is how the hub runs its member.
type RunConfig struct {
	Node string
	// UnitKey is the node label whose value names the node's unit (a
	// NodeGroup's name: its nodes carry <group>=<unit>).
	UnitKey string
	// BindAddr is where the member gossips; its port is where every member
	// is dialled unless its Node carries health.GossipAddressAnnotation.
	BindAddr string
	// AdvertiseAddr overrides what the others dial (default: the node's
	// annotation, else its InternalIP and the bind port).
	AdvertiseAddr string
	// LocalNode informs of the local node (selfclient.LocalNode), run by
	// the caller.
	LocalNode toolscache.SharedIndexInformer
	// Core reads Nodes and the key Secret (core/v1), Leases writes the
	// unit's Lease (coordination.k8s.io/v1): both through the hub, as the
	// hub, so reads hold offline and across restarts.
	Core, Leases rest.Interface
	// Online says whether the hub reaches the cloud.
	Online func() bool
	// ReportInterval is how often the publisher renews the unit's report
	// when nothing changes (default 10s); the Lease lasts three of them.
	ReportInterval time.Duration
	// Tick paces the member's own work (default 1s).
	Tick time.Duration
}

// Run waits for the node's unit and the gossip keys, then runs the member
// until ctx ends; it leaves the group on the way out.
func Run(ctx context.Context, rc RunConfig) error {
	if rc.ReportInterval == 0 {
		rc.ReportInterval = 10 * time.Second
	}
	if rc.Tick == 0 {
		rc.Tick = time.Second
	}
	_, bindPort, err := splitHostPort(rc.BindAddr)
	if err != nil {
		return fmt.Errorf("health bind address: %w", err)
	}
	w := &watcher{rc: rc, port: bindPort, changed: make(chan struct{}, 1)}
	go w.run(ctx)

	// The member starts once the unit and the keys are known.
	var m *Member
	var keysInstalled int // the version of the keys the member has
	waiting := time.NewTicker(time.Minute)
	defer waiting.Stop()
	for m == nil {
		select {
		case <-ctx.Done():
			return nil
		case <-w.changed:
		case <-waiting.C:
			local, keys, _, _, _ := w.snapshot()
			klog.InfoS("gossip member waiting", "node", rc.Node, "nodeKnown", local != nil, "keys", len(keys),
				"secret", health.Namespace+"/"+health.GossipKeySecret)
			continue
		}
		local, keys, keysGen, _, _ := w.snapshot()
		keysInstalled = keysGen
		if local == nil || len(keys) == 0 {
			continue
		}
		cfg := Config{Node: rc.Node, BindAddr: rc.BindAddr, AdvertiseAddr: rc.AdvertiseAddr, Keys: keys}
		if cfg.AdvertiseAddr == "" {
			cfg.AdvertiseAddr = peerOf(local, bindPort).Addr
		}
		if m, err = New(cfg); err != nil {
			return err
		}
	}
	defer m.Leave()
	klog.InfoS("gossip member started", "node", rc.Node, "address", m.Addr())

	leases := &leaseWriter{client: rc.Leases, interval: rc.ReportInterval}
	tick := time.NewTicker(rc.Tick)
	defer tick.Stop()
	for i := 0; ; i++ {
		_, keys, v, unit, peers := w.snapshot()
		if v != keysInstalled {
			if err := m.SetKeys(keys); err != nil {
				klog.ErrorS(err, "gossip: installing rotated keys", "node", rc.Node)
			} else {
				keysInstalled = v
			}
		}
		m.SetPeers(peers)
		m.SetOnline(rc.Online())
		m.Tick()
		if i%5 == 0 {
			m.JoinMissing()
			m.Regossip()
		}
		if unit != "" && m.Publisher() {
			if err := leases.publish(ctx, m.Report(unit)); err != nil {
				klog.V(2).InfoS("gossip: publishing the unit's report", "unit", unit, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-w.changed:
		}
	}
}

// peerOf is where a node's hub gossips.
func peerOf(n *selfclient.Node, port int) Peer {
	if a := n.Annotations[health.GossipAddressAnnotation]; a != "" {
		return Peer{Name: n.Name, Addr: a}
	}
	for _, a := range n.Status.Addresses {
		if a.Type == selfclient.NodeInternalIP {
			return Peer{Name: n.Name, Addr: net.JoinHostPort(a.Address, strconv.Itoa(port))}
		}
	}
	return Peer{Name: n.Name}
}

// watcher follows the local node, the nodes of its unit and the key Secret.
type watcher struct {
	rc      RunConfig
	port    int
	changed chan struct{}

	mu    sync.Mutex
	local *selfclient.Node
	unit  string
	peers map[string]Peer
	keys  [][]byte
	// keysGen counts the key lists seen, so the member installs each once.
	keysGen int
	// stopPeers ends the watch of the current unit's nodes.
	stopPeers context.CancelFunc
}

// snapshot returns the local node, the keys and their version, the unit
// and its peers with an address.
func (w *watcher) snapshot() (*selfclient.Node, [][]byte, int, string, []Peer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	peers := make([]Peer, 0, len(w.peers))
	for _, p := range w.peers {
		if p.Addr != "" {
			peers = append(peers, p)
		}
	}
	return w.local, w.keys, w.keysGen, w.unit, peers
}

func (w *watcher) poke() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *watcher) run(ctx context.Context) {
	_, _ = w.rc.LocalNode.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.setLocal(ctx, o.(*selfclient.Node)) },
		UpdateFunc: func(_, o any) { w.setLocal(ctx, o.(*selfclient.Node)) },
	})
	secret := selfclient.Informer(w.rc.Core, "secrets", health.Namespace, &selfclient.Secret{}, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", health.GossipKeySecret).String()
	})
	_, _ = secret.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.setKeys(o.(*selfclient.Secret)) },
		UpdateFunc: func(_, o any) { w.setKeys(o.(*selfclient.Secret)) },
	})
	secret.Run(ctx.Done())
}

func (w *watcher) setLocal(ctx context.Context, n *selfclient.Node) {
	unit := n.Labels[w.rc.UnitKey]
	w.mu.Lock()
	w.local = n
	restart := unit != w.unit
	if restart {
		if w.stopPeers != nil {
			w.stopPeers()
			w.stopPeers = nil
		}
		w.unit, w.peers = unit, map[string]Peer{}
	}
	w.mu.Unlock()
	if restart && unit != "" {
		pctx, cancel := context.WithCancel(ctx)
		w.mu.Lock()
		w.stopPeers = cancel
		w.mu.Unlock()
		sel := labels.SelectorFromSet(labels.Set{w.rc.UnitKey: unit}).String()
		inf := selfclient.Informer(w.rc.Core, "nodes", "", &selfclient.Node{}, func(o *metav1.ListOptions) { o.LabelSelector = sel })
		set := func(o any) {
			n := o.(*selfclient.Node)
			w.mu.Lock()
			if w.unit == unit {
				w.peers[n.Name] = peerOf(n, w.port)
			}
			w.mu.Unlock()
			w.poke()
		}
		_, _ = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    set,
			UpdateFunc: func(_, o any) { set(o) },
			DeleteFunc: func(o any) {
				if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
					o = d.Obj
				}
				if n, ok := o.(*selfclient.Node); ok {
					w.mu.Lock()
					if w.unit == unit {
						delete(w.peers, n.Name)
					}
					w.mu.Unlock()
					w.poke()
				}
			},
		})
		go inf.Run(pctx.Done())
	}
	w.poke()
}

func (w *watcher) setKeys(s *selfclient.Secret) {
	keys, err := ParseKeys(s.Data["keys"])
	if err != nil {
		klog.ErrorS(err, "gossip keys", "secret", health.Namespace+"/"+health.GossipKeySecret)
		return
	}
	w.mu.Lock()
	w.keys = keys
	w.keysGen++
	w.mu.Unlock()
	w.poke()
}

// ParseKeys reads the key Secret's "keys": base64 keys of 16, 24 or 32
// bytes, one per line, the first encrypting.
func ParseKeys(data []byte) ([][]byte, error) {
	var keys [][]byte
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("line %d is not base64: %w", line, err)
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("line %d: a key has 16, 24 or 32 bytes, not %d", line, n)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no key")
	}
	return keys, nil
}

// leaseWriter publishes the unit's report: when it changes, and to renew
// it every interval. One member per unit writes, so the writes per unit do
// not grow with its size.
type leaseWriter struct {
	client    rest.Interface
	interval  time.Duration
	last      *health.Report
	lastWrite time.Time
}

func (lw *leaseWriter) publish(ctx context.Context, r *health.Report) error {
	if r.SameVerdicts(lw.last) && time.Since(lw.lastWrite) < lw.interval {
		return nil
	}
	raw, err := r.Annotation()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	now := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{}
	err = lw.client.Get().Namespace(health.Namespace).Resource("leases").Name(r.Unit).Do(ctx).Into(lease)
	switch {
	case apierrors.IsNotFound(err):
		lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: r.Unit, Namespace: health.Namespace}}
	case err != nil:
		return err
	}
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Annotations[health.ReportAnnotation] = raw
	if ptr.Deref(lease.Spec.HolderIdentity, "") != r.Reporter {
		lease.Spec.HolderIdentity = ptr.To(r.Reporter)
		lease.Spec.AcquireTime = &now
		if lease.ResourceVersion != "" {
			lease.Spec.LeaseTransitions = ptr.To(ptr.Deref(lease.Spec.LeaseTransitions, 0) + 1)
		}
	}
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(3 * lw.interval / time.Second))
	lease.Spec.RenewTime = &now
	req := lw.client.Put().Namespace(health.Namespace).Resource("leases").Name(r.Unit)
	if lease.ResourceVersion == "" {
		req = lw.client.Post().Namespace(health.Namespace).Resource("leases")
	}
	if err := req.Body(lease).Do(ctx).Error(); err != nil {
		return err
	}
	lw.last, lw.lastWrite = r, time.Now()
	return nil
}
