package site

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="events.k8s.io",resources=events,verbs=create;patch

// NodeReconciler puts on each node what its units and groups ask for: the
// group labels and every unit's setNode, through server-side apply as
// FieldManager. What the manager owns and is no longer asked for is dropped
// by the same apply; what others put on the node is never touched.
type NodeReconciler struct {
	Client   client.Client
	Nodes    kubernetes.Interface
	Recorder events.EventRecorder
	// MaxConcurrentReconciles bounds parallel node writes.
	MaxConcurrentReconciles int
}

// Reconcile brings one node's sitegrid-owned fields to the desired state,
// writing only when they differ.
func (r *NodeReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	node := &corev1.Node{}
	if err := r.Client.Get(ctx, req.NamespacedName, node); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	snap, err := loadSnapshot(ctx, r.Client, node)
	if err != nil {
		return reconcile.Result{}, err
	}
	desired, _ := snap.DesiredForNode(node)
	owned, err := corev1ac.ExtractNode(node, FieldManager)
	if err != nil {
		return reconcile.Result{}, err
	}
	if skipped := dropForeign(node, owned, &desired); len(skipped) > 0 {
		r.reportForeign(snap, node, skipped)
	}
	if sameAsOwned(owned, desired) {
		return reconcile.Result{}, nil
	}
	_, err = r.Nodes.CoreV1().Nodes().Apply(ctx, applyConfig(node.Name, desired), metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if apierrors.IsNotFound(err) {
		return reconcile.Result{}, nil
	}
	if err != nil {
		r.reportRefused(snap, node, err)
		return reconcile.Result{}, fmt.Errorf("apply sitegrid fields to node %s: %w", node.Name, err)
	}
	log.FromContext(ctx).V(1).Info("node updated", "node", node.Name, "labels", desired.Labels, "taints", len(desired.Taints), "unschedulable", desired.Unschedulable)
	return reconcile.Result{}, nil
}

// foreignField is a field sitegrid wanted but someone else holds with
// another value.
type foreignField struct{ kind, key, want, have string }

// dropForeign removes from desired every label, annotation and taint that
// the node already has with a different value that sitegrid does not own:
// someone else put it there, so it is left alone.
func dropForeign(node *corev1.Node, owned *corev1ac.NodeApplyConfiguration, desired *Desired) []foreignField {
	var skipped []foreignField
	for k, v := range desired.Labels {
		if have, ok := node.Labels[k]; ok && have != v && !hasKey(owned.Labels, k) {
			delete(desired.Labels, k)
			skipped = append(skipped, foreignField{"label", k, v, have})
		}
	}
	for k, v := range desired.Annotations {
		// The list of units is sitegrid's to keep, also where SuperEdge's
		// site-manager wrote it before.
		if k == sitev1.AnnotationNodeUnits {
			continue
		}
		if have, ok := node.Annotations[k]; ok && have != v && !hasKey(owned.Annotations, k) {
			delete(desired.Annotations, k)
			skipped = append(skipped, foreignField{"annotation", k, v, have})
		}
	}
	ownedTaints := map[string]bool{}
	if owned.Spec != nil {
		for _, t := range owned.Spec.Taints {
			if t.Key != nil && t.Effect != nil {
				ownedTaints[*t.Key+"\x00"+string(*t.Effect)] = true
			}
		}
	}
	kept := desired.Taints[:0]
	for _, t := range desired.Taints {
		foreign := false
		for _, have := range node.Spec.Taints {
			if have.Key == t.Key && have.Effect == t.Effect && have.Value != t.Value && !ownedTaints[t.Key+"\x00"+string(t.Effect)] {
				foreign = true
				skipped = append(skipped, foreignField{"taint", t.Key + ":" + string(t.Effect), t.Value, have.Value})
			}
		}
		if !foreign {
			kept = append(kept, t)
		}
	}
	desired.Taints = kept
	return skipped
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// sameAsOwned reports whether the fields sitegrid owns are exactly desired.
func sameAsOwned(owned *corev1ac.NodeApplyConfiguration, d Desired) bool {
	if !maps.Equal(nonNil(owned.Labels), d.Labels) || !maps.Equal(nonNil(owned.Annotations), d.Annotations) {
		return false
	}
	var ownedTaints []corev1.Taint
	ownedUnschedulable := false
	if owned.Spec != nil {
		for _, t := range owned.Spec.Taints {
			ownedTaints = append(ownedTaints, corev1.Taint{Key: deref(t.Key), Value: deref(t.Value), Effect: corev1.TaintEffect(deref((*string)(t.Effect)))})
		}
		ownedUnschedulable = owned.Spec.Unschedulable != nil && *owned.Spec.Unschedulable
	}
	if ownedUnschedulable != d.Unschedulable || len(ownedTaints) != len(d.Taints) {
		return false
	}
	sort.Slice(ownedTaints, func(i, j int) bool {
		if ownedTaints[i].Key != ownedTaints[j].Key {
			return ownedTaints[i].Key < ownedTaints[j].Key
		}
		return ownedTaints[i].Effect < ownedTaints[j].Effect
	})
	for i := range ownedTaints {
		if ownedTaints[i] != d.Taints[i] {
			return false
		}
	}
	return true
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// applyConfig is the complete set of fields sitegrid owns on a node; fields
// it owned before and left out here are removed by the apply.
func applyConfig(name string, d Desired) *corev1ac.NodeApplyConfiguration {
	ac := corev1ac.Node(name).WithLabels(d.Labels).WithAnnotations(d.Annotations)
	if len(d.Taints) > 0 || d.Unschedulable {
		spec := corev1ac.NodeSpec()
		for _, t := range d.Taints {
			spec.WithTaints(corev1ac.Taint().WithKey(t.Key).WithValue(t.Value).WithEffect(t.Effect))
		}
		if d.Unschedulable {
			spec.WithUnschedulable(true)
		}
		ac.WithSpec(spec)
	}
	return ac
}

// reportForeign tells the node's first unit, in one Event, which fields it
// asked for are held by someone else.
func (r *NodeReconciler) reportForeign(snap Snapshot, node *corev1.Node, fields []foreignField) {
	units := snap.UnitsOfNode(node)
	if len(units) == 0 {
		return // a group label: the group reports conflicts itself
	}
	sort.Slice(fields, func(i, j int) bool { return fields[i].kind+fields[i].key < fields[j].kind+fields[j].key })
	parts := make([]string, 0, len(fields))
	for _, f := range fields {
		parts = append(parts, fmt.Sprintf("%s %s is %q (wanted %q)", f.kind, f.key, f.have, f.want))
	}
	r.Recorder.Eventf(units[0], node, corev1.EventTypeWarning, sitev1.ReasonFieldHeldByOthers, "SetNode",
		"node %s: %s; set by someone else, so sitegrid leaves them alone", node.Name, strings.Join(parts, "; "))
}

// reportRefused tells the node's units, in an Event each, that the
// apiserver refused what sitegrid puts on the node, and why: until the
// cause is mended no unit's fields reach that node.
func (r *NodeReconciler) reportRefused(snap Snapshot, node *corev1.Node, err error) {
	if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) && !apierrors.IsBadRequest(err) && !apierrors.IsRequestEntityTooLargeError(err) {
		return // a passing fault: retried, not worth an Event
	}
	for _, u := range snap.UnitsOfNode(node) {
		r.Recorder.Eventf(u, node, corev1.EventTypeWarning, sitev1.ReasonNodeApplyRefused, "SetNode",
			"node %s refused what its units put on it, so none of it is there: %v", node.Name, err)
	}
}

// loadSnapshot reads from the cache what the decisions for node are made
// from, copying no list: every group (groups are few), the units that have
// the node as a member (through UnitCandidateIndex, not a scan of every
// unit), and the automatic units its groups name for it that exist (one of
// those that does not have the node keeps its name off the node's list).
func loadSnapshot(ctx context.Context, c client.Client, node *corev1.Node) (Snapshot, error) {
	var groups sitev1.NodeGroupList
	if err := c.List(ctx, &groups, client.UnsafeDisableDeepCopy); err != nil {
		return Snapshot{}, err
	}
	units, err := unitsOfNode(ctx, c, node)
	if err != nil {
		return Snapshot{}, err
	}
	s := Snapshot{Units: units, Groups: make([]*sitev1.NodeGroup, len(groups.Items))}
	for i := range groups.Items {
		g := &groups.Items[i]
		s.Groups[i] = g
		values, ok := sitev1.AutoValues(g, node)
		if !ok {
			continue
		}
		name := sitev1.AutoUnitName(g.Name, values)
		if slices.ContainsFunc(s.Units, func(u *sitev1.NodeUnit) bool { return u.Name == name }) {
			continue
		}
		u := &sitev1.NodeUnit{}
		switch err := c.Get(ctx, types.NamespacedName{Name: name}, u); {
		case err == nil:
			s.Units = append(s.Units, u)
		case !apierrors.IsNotFound(err):
			return Snapshot{}, err
		}
	}
	return s, nil
}

// SetupWithManager registers the controller. A node is reconciled when it
// changes, when a unit that has or had it as a member changes, and when any
// group changes (groups are few and change rarely).
func (r *NodeReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("site-node").
		For(&corev1.Node{}, builder.WithPredicates(nodeChanged())).
		Watches(&sitev1.NodeUnit{}, r.nodesOfUnit(mgr.GetClient())).
		// A group's status writes change nothing on nodes; only its spec,
		// creation and deletion do.
		Watches(&sitev1.NodeGroup{}, handler.EnqueueRequestsFromMapFunc(r.allNodes(mgr.GetClient())),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.MaxConcurrentReconciles)}).
		Complete(r)
}

// nodeChanged lets through the node changes that can change decisions:
// labels, annotations, taints, cordon, and managed fields (someone took a
// field over). Status heartbeats are ignored.
func nodeChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
			return !maps.Equal(o.Labels, n.Labels) || !maps.Equal(o.Annotations, n.Annotations) ||
				o.Spec.Unschedulable != n.Spec.Unschedulable || len(o.Spec.Taints) != len(n.Spec.Taints) ||
				!taintsEqual(o.Spec.Taints, n.Spec.Taints) || !managersEqual(o.ManagedFields, n.ManagedFields)
		},
	}
}

func taintsEqual(a, b []corev1.Taint) bool {
	for i := range a {
		if a[i].Key != b[i].Key || a[i].Value != b[i].Value || a[i].Effect != b[i].Effect {
			return false
		}
	}
	return true
}

func managersEqual(a, b []metav1.ManagedFieldsEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Manager != b[i].Manager || a[i].Operation != b[i].Operation || a[i].Subresource != b[i].Subresource ||
			(a[i].FieldsV1 == nil) != (b[i].FieldsV1 == nil) || (a[i].FieldsV1 != nil && a[i].FieldsV1.GetRawString() != b[i].FieldsV1.GetRawString()) {
			return false
		}
	}
	return true
}

// nodesOfUnit enqueues the members of a unit before and after a change, so
// nodes that left it lose what it put on them.
func (r *NodeReconciler) nodesOfUnit(c client.Client) handler.EventHandler {
	members := func(ctx context.Context, u *sitev1.NodeUnit) []reconcile.Request {
		nodes, err := unitMembers(ctx, c, u)
		if err != nil {
			log.FromContext(ctx).Error(err, "list unit members", "unit", u.Name)
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(nodes))
		for _, n := range nodes {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: n.Name}})
		}
		return reqs
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueueOfRequests) {
			addAll(q, members(ctx, e.Object.(*sitev1.NodeUnit)))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueueOfRequests) {
			o, n := e.ObjectOld.(*sitev1.NodeUnit), e.ObjectNew.(*sitev1.NodeUnit)
			// A status update (readyRate) changes nothing on nodes.
			if o.Generation == n.Generation && maps.Equal(o.Labels, n.Labels) && maps.Equal(o.Annotations, n.Annotations) &&
				(o.DeletionTimestamp == nil) == (n.DeletionTimestamp == nil) {
				return
			}
			addAll(q, members(ctx, o))
			addAll(q, members(ctx, n))
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueueOfRequests) {
			if u, ok := e.Object.(*sitev1.NodeUnit); ok {
				addAll(q, members(ctx, u))
			}
		},
	}
}

func (r *NodeReconciler) allNodes(c client.Client) handler.MapFunc {
	return requestsForAll(c, func() client.ObjectList { return &corev1.NodeList{} })
}

// requestsForAll maps any event to a request for every cluster-scoped
// object of a list type, read from the cache.
func requestsForAll(c client.Client, newList func() client.ObjectList) handler.MapFunc {
	return func(ctx context.Context, _ client.Object) []reconcile.Request {
		list := newList()
		if err := c.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			log.FromContext(ctx).Error(err, "list for a broad event")
			return nil
		}
		var reqs []reconcile.Request
		_ = meta.EachListItem(list, func(o runtime.Object) error {
			if obj, ok := o.(client.Object); ok {
				reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: obj.GetName()}})
			}
			return nil
		})
		return reqs
	}
}

// workqueueOfRequests is the queue event handlers add requests to.
type workqueueOfRequests = workqueue.TypedRateLimitingInterface[reconcile.Request]

func addAll(q workqueueOfRequests, reqs []reconcile.Request) {
	for _, r := range reqs {
		q.Add(r)
	}
}

// NodeLabelIndex indexes cached nodes by each "key=value" label they carry,
// so a unit's members are found without scanning every node.
const NodeLabelIndex = "site.sitegrid.io/label"

// IndexNodeLabels registers NodeLabelIndex with the manager's cache.
func IndexNodeLabels(ctx context.Context, mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &corev1.Node{}, NodeLabelIndex, func(o client.Object) []string {
		pairs := make([]string, 0, len(o.GetLabels()))
		for k, v := range o.GetLabels() {
			pairs = append(pairs, k+"="+v)
		}
		return pairs
	})
}

// unitMembers lists a unit's member nodes from the cache. The nodes are the
// cache's own objects: read them, never change them.
func unitMembers(ctx context.Context, c client.Client, u *sitev1.NodeUnit) ([]*corev1.Node, error) {
	var out []*corev1.Node
	seen := map[string]bool{}
	sel := u.Spec.Selector
	if sel != nil && (len(sel.MatchLabels) > 0 || len(sel.MatchExpressions) > 0 || len(sel.Annotations) > 0) {
		var opts []client.ListOption
		if len(sel.MatchLabels) > 0 || len(sel.MatchExpressions) > 0 {
			if _, err := sel.LabelSelector(); err != nil {
				return nil, fmt.Errorf("unit %s: %w", u.Name, err)
			}
		}
		// Narrow the list through the label index with one of the required
		// labels; UnitHasNode below checks the whole selector.
		for _, k := range slices.Sorted(maps.Keys(sel.MatchLabels)) {
			opts = append(opts, client.MatchingFields{NodeLabelIndex: k + "=" + sel.MatchLabels[k]})
			break
		}
		var nodes corev1.NodeList
		if err := c.List(ctx, &nodes, append(opts, client.UnsafeDisableDeepCopy)...); err != nil {
			return nil, err
		}
		for i := range nodes.Items {
			if sitev1.UnitHasNode(u, &nodes.Items[i]) {
				out = append(out, &nodes.Items[i])
				seen[nodes.Items[i].Name] = true
			}
		}
	}
	for _, name := range u.Spec.Nodes {
		if seen[name] {
			continue
		}
		n := &corev1.Node{}
		if err := c.Get(ctx, types.NamespacedName{Name: name}, n); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, err
		}
		seen[name] = true
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return strings.Compare(out[i].Name, out[j].Name) < 0 })
	return out, nil
}
