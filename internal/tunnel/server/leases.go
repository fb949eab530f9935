package server

import (
	"context"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// A Lease per tunnelled node, named LeasePrefix+<node> in the server's
// namespace, records which replica holds the node's session (holder), or
// none while the node is disconnected. Every replica reads them: a node
// with a Lease is an edge node whose kubelet is reached through the
// tunnel only, so a disconnected one gets a clear error instead of a
// direct dial, and a replica that does not hold the node knows which one
// does. The Lease is owned by its Node and goes with it.
const (
	LeasePrefix = "tunnel-"
	// NodeLabel names the node on its Lease.
	NodeLabel = "tunnel.sitegrid.io/node"
	// PeerAnnotation is where the holder takes CONNECTs other replicas
	// forward.
	PeerAnnotation = "tunnel.sitegrid.io/peer-address"
	// leaseSeconds is long: a holder is replaced by the replica the node
	// reconnects to, not by expiry; renewals only say the holder lives.
	leaseSeconds = 900
	renewEvery   = 5 * time.Minute
)

// leases writes this replica's Leases.
type leases struct {
	client    kubernetes.Interface
	namespace string
	replica   string
	// peer is this replica's address for forwarded CONNECTs ("": none).
	peer     string
	lister   cache.Indexer
	nodes    cache.Indexer
	sessions *sessions
}

// leaseState is what a node's Lease says.
type leaseState struct {
	tunnelled bool
	holder    string
	peer      string
	renewed   time.Time
}

func (l *leases) state(node string) leaseState {
	obj, ok, _ := l.lister.GetByKey(l.namespace + "/" + LeasePrefix + node)
	if !ok {
		return leaseState{}
	}
	le := obj.(*coordinationv1.Lease)
	st := leaseState{tunnelled: true, holder: ptr.Deref(le.Spec.HolderIdentity, ""), peer: le.Annotations[PeerAnnotation]}
	if le.Spec.RenewTime != nil {
		st.renewed = le.Spec.RenewTime.Time
	}
	return st
}

// held records that this replica holds node's session.
func (l *leases) held(ctx context.Context, node string) {
	if err := l.write(ctx, node, true); err != nil {
		klog.ErrorS(err, "record tunnel lease", "node", node)
	}
}

// released records that node's session here ended, unless another replica
// holds it by now.
func (l *leases) released(node string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.write(ctx, node, false); err != nil {
		klog.ErrorS(err, "release tunnel lease", "node", node)
	}
}

// write records hold or release in node's Lease. It starts from the
// informer's copy, so a connect or a renewal costs one write, not a read
// and a write; when that copy was stale (a conflict, or the Lease exists
// already) it reads the Lease once and decides again.
func (l *leases) write(ctx context.Context, node string, hold bool) error {
	name := LeasePrefix + node
	var cur *coordinationv1.Lease
	if obj, ok, _ := l.lister.GetByKey(l.namespace + "/" + name); ok {
		cur = obj.(*coordinationv1.Lease)
	}
	err := l.writeFrom(ctx, node, cur, hold)
	if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
		return err
	}
	fresh, err := l.client.CoordinationV1().Leases(l.namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		fresh = nil
	case err != nil:
		return err
	}
	err = l.writeFrom(ctx, node, fresh, hold)
	if apierrors.IsConflict(err) {
		return nil // written meanwhile by the replica the node moved to
	}
	return err
}

// writeFrom writes node's Lease as hold says, from cur (nil: none yet).
func (l *leases) writeFrom(ctx context.Context, node string, cur *coordinationv1.Lease, hold bool) error {
	leasesAPI := l.client.CoordinationV1().Leases(l.namespace)
	now := metav1.NewMicroTime(time.Now())
	if cur == nil {
		if !hold {
			return nil
		}
		obj, ok, _ := l.nodes.GetByKey(node)
		if !ok {
			return nil
		}
		n := obj.(*corev1.Node)
		le := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: LeasePrefix + node, Namespace: l.namespace, Labels: map[string]string{NodeLabel: node},
				Annotations:     map[string]string{PeerAnnotation: l.peer},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &l.replica, LeaseDurationSeconds: ptr.To[int32](leaseSeconds), AcquireTime: &now, RenewTime: &now},
		}
		_, err := leasesAPI.Create(ctx, le, metav1.CreateOptions{})
		return err
	}
	holder := ptr.Deref(cur.Spec.HolderIdentity, "")
	le := cur.DeepCopy()
	switch {
	case hold:
		if holder != l.replica {
			le.Spec.AcquireTime = &now
		}
		le.Spec.HolderIdentity = &l.replica
		le.Spec.RenewTime = &now
		if le.Annotations == nil {
			le.Annotations = map[string]string{}
		}
		le.Annotations[PeerAnnotation] = l.peer
	case holder == l.replica:
		// Renewed on release too: the renew time of a Lease without a
		// holder is when its node was last connected.
		le.Spec.HolderIdentity = nil
		le.Spec.RenewTime = &now
	default:
		return nil // another replica holds it now
	}
	_, err := leasesAPI.Update(ctx, le, metav1.UpdateOptions{})
	return err
}

// renew keeps this replica's Leases current until ctx ends.
func (l *leases) renew(ctx context.Context) {
	t := time.NewTicker(renewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, node := range l.sessions.names() {
			if err := l.write(ctx, node, true); err != nil && ctx.Err() == nil {
				klog.ErrorS(err, "renew tunnel lease", "node", node)
			}
		}
	}
}
