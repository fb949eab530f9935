package site

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// +kubebuilder:rbac:groups=site.superedge.io,resources=nodegroups,verbs=get;list;watch
// +kubebuilder:rbac:groups=site.superedge.io,resources=nodegroups/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=site.superedge.io,resources=nodegroups/finalizers,verbs=update

// NodeGroupReconciler creates and removes the units of autoFindNodeKeys and
// keeps a group's status: its units and any conflict between them.
type NodeGroupReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
}

// Reconcile brings one group's automatic units and status up to date.
func (r *NodeGroupReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	group := &sitev1.NodeGroup{}
	if err := r.Client.Get(ctx, req.NamespacedName, group); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if group.DeletionTimestamp != nil {
		return reconcile.Result{}, nil // its automatic units go with it (owner references)
	}
	status := group.Status.DeepCopy()
	if err := r.reconcileAutoUnits(ctx, group, status); err != nil {
		return reconcile.Result{}, err
	}
	conflicts, err := r.memberStatus(ctx, group, status)
	if err != nil {
		return reconcile.Result{}, err
	}
	status.ObservedGeneration = group.Generation
	if equality.Semantic.DeepEqual(status, &group.Status) {
		return reconcile.Result{}, nil
	}
	wasConflict := meta.IsStatusConditionTrue(group.Status.Conditions, sitev1.GroupConflict)
	patch := client.MergeFrom(group.DeepCopy())
	group.Status = *status
	if err := r.Client.Status().Patch(ctx, group, patch); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if len(conflicts) > 0 && !wasConflict {
		for _, c := range conflicts[:min(len(conflicts), 10)] {
			r.Recorder.Eventf(group, nil, corev1.EventTypeWarning, sitev1.ReasonNodesClaimedTwice, "ClaimNode",
				"node %s is claimed by units %s of group %s; it keeps %s=%s", c.Node, strings.Join(c.Units, ", "), group.Name, group.Name, c.Kept)
		}
	}
	return reconcile.Result{}, nil
}

// reconcileAutoUnits makes one unit per combination of autoFindNodeKeys
// values among the nodes, and deletes the units no node matches any more.
func (r *NodeGroupReconciler) reconcileAutoUnits(ctx context.Context, group *sitev1.NodeGroup, status *sitev1.NodeGroupStatus) error {
	want := map[string][]string{} // unit name -> values
	if len(group.Spec.AutoFindNodeKeys) > 0 {
		var nodes corev1.NodeList
		if err := r.Client.List(ctx, &nodes, client.HasLabels(group.Spec.AutoFindNodeKeys), client.UnsafeDisableDeepCopy); err != nil {
			return err
		}
		for i := range nodes.Items {
			if values, ok := sitev1.AutoValues(group, &nodes.Items[i]); ok {
				want[sitev1.AutoUnitName(group.Name, values)] = values
			}
		}
	}
	var have sitev1.NodeUnitList
	if err := r.Client.List(ctx, &have, client.MatchingLabels{sitev1.AutoGroupLabel: group.Name}); err != nil {
		return err
	}
	for i := range have.Items {
		u := &have.Items[i]
		if _, ok := want[u.Name]; ok || !metav1.IsControlledBy(u, group) || u.DeletionTimestamp != nil {
			continue
		}
		if err := r.Client.Delete(ctx, u, client.Preconditions{UID: &u.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete unit %s: %w", u.Name, err)
		}
		log.FromContext(ctx).Info("removed automatic unit no node matches", "unit", u.Name, "group", group.Name)
	}
	var taken []string
	names := slices.Sorted(maps.Keys(want))
	for _, name := range names {
		existing := &sitev1.NodeUnit{}
		err := r.Client.Get(ctx, types.NamespacedName{Name: name}, existing)
		if err == nil {
			if !metav1.IsControlledBy(existing, group) {
				taken = append(taken, name)
				continue
			}
			// An automatic unit is the group's own: keep its selector right
			// when the keys change or someone edits it.
			want := r.autoUnit(group, name, want[name])
			if !equality.Semantic.DeepEqual(existing.Spec.Selector, want.Spec.Selector) {
				patch := client.MergeFrom(existing.DeepCopy())
				existing.Spec.Selector = want.Spec.Selector
				if err := r.Client.Patch(ctx, existing, patch); client.IgnoreNotFound(err) != nil {
					return fmt.Errorf("update unit %s: %w", name, err)
				}
			}
			continue
		}
		if !apierrors.IsNotFound(err) {
			return err
		}
		if err := r.Client.Create(ctx, r.autoUnit(group, name, want[name])); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create unit %s: %w", name, err)
		}
		log.FromContext(ctx).Info("created automatic unit", "unit", name, "group", group.Name)
	}
	cond := metav1.Condition{Type: sitev1.GroupAutoUnits, Status: metav1.ConditionTrue, Reason: sitev1.ReasonUnitsInPlace,
		Message: fmt.Sprintf("%d automatic units", len(want)), ObservedGeneration: group.Generation}
	if len(taken) > 0 {
		cond.Status, cond.Reason = metav1.ConditionFalse, sitev1.ReasonNameTaken
		cond.Message = fmt.Sprintf("NodeUnits %s exist and do not belong to this group; rename or delete them", firstNames(taken, 5))
	}
	if len(group.Spec.AutoFindNodeKeys) == 0 {
		meta.RemoveStatusCondition(&status.Conditions, sitev1.GroupAutoUnits)
	} else {
		meta.SetStatusCondition(&status.Conditions, cond)
	}
	return nil
}

func (r *NodeGroupReconciler) autoUnit(group *sitev1.NodeGroup, name string, values []string) *sitev1.NodeUnit {
	match := map[string]string{}
	for i, k := range group.Spec.AutoFindNodeKeys {
		match[k] = values[i]
	}
	u := &sitev1.NodeUnit{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{sitev1.AutoGroupLabel: group.Name}},
		Spec:       sitev1.NodeUnitSpec{Type: sitev1.EdgeNodeUnit, Selector: &sitev1.Selector{MatchLabels: match}},
	}
	// The group owns its automatic units: deleting it deletes them.
	_ = controllerutil.SetControllerReference(group, u, r.Client.Scheme())
	return u
}

// memberStatus fills the member units and the Conflict condition.
func (r *NodeGroupReconciler) memberStatus(ctx context.Context, group *sitev1.NodeGroup, status *sitev1.NodeGroupStatus) ([]Conflict, error) {
	var units sitev1.NodeUnitList
	if err := r.Client.List(ctx, &units, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	claims := map[string][]string{} // node -> units of this group
	members := []string{}
	for i := range units.Items {
		u := &units.Items[i]
		if u.DeletionTimestamp != nil || !sitev1.GroupHasUnit(group, u) {
			continue
		}
		members = append(members, u.Name)
		nodes, err := unitMembers(ctx, r.Client, u)
		if err != nil {
			continue // the unit's own status reports a bad selector
		}
		for _, n := range nodes {
			claims[n.Name] = append(claims[n.Name], u.Name)
		}
	}
	sort.Strings(members)
	status.NodeUnits, status.UnitNumber = members, len(members)

	var conflicts []Conflict
	for node, us := range claims {
		if len(us) < 2 {
			continue
		}
		sort.Strings(us)
		n := &corev1.Node{}
		kept := us[0]
		if err := r.Client.Get(ctx, types.NamespacedName{Name: node}, n); err == nil {
			current, has := n.Labels[group.Name]
			kept = PickUnit(us, current, has)
		}
		conflicts = append(conflicts, Conflict{Group: group.Name, Node: node, Units: us, Kept: kept})
	}
	sort.Slice(conflicts, func(i, j int) bool { return conflicts[i].Node < conflicts[j].Node })
	cond := metav1.Condition{Type: sitev1.GroupConflict, Status: metav1.ConditionFalse, Reason: sitev1.ReasonNoConflict,
		Message: "every node belongs to at most one unit of the group", ObservedGeneration: group.Generation}
	if len(conflicts) > 0 {
		var parts []string
		for _, c := range conflicts[:min(len(conflicts), 5)] {
			parts = append(parts, fmt.Sprintf("%s (units %s, keeps %s)", c.Node, strings.Join(c.Units, ", "), c.Kept))
		}
		more := ""
		if len(conflicts) > 5 {
			more = fmt.Sprintf(" and %d more", len(conflicts)-5)
		}
		cond.Status, cond.Reason = metav1.ConditionTrue, sitev1.ReasonNodesClaimedTwice
		cond.Message = fmt.Sprintf("%d nodes are claimed by more than one unit: %s%s", len(conflicts), strings.Join(parts, "; "), more)
	}
	meta.SetStatusCondition(&status.Conditions, cond)
	return conflicts, nil
}

// SetupWithManager registers the controller: a group is reconciled when it
// changes, when one of its units changes, and when a node change can change
// its automatic units or its status (groupsForNode): a node event costs the
// groups it concerns, not every group over every node.
func (r *NodeGroupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	c := mgr.GetClient()
	membershipChanged := predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) ||
				!maps.Equal(e.ObjectOld.GetAnnotations(), e.ObjectNew.GetAnnotations()) ||
				e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration()
		},
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("site-nodegroup").
		For(&sitev1.NodeGroup{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// Its automatic units: re-made when deleted or edited; their status
		// (ready rates) does not concern the group.
		Owns(&sitev1.NodeUnit{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&sitev1.NodeUnit{}, groupsOfUnit(c), builder.WithPredicates(membershipChanged)).
		Watches(&corev1.Node{}, groupsForNode(c), builder.WithPredicates(membershipChanged)).
		Complete(r)
}

// groupsOfUnit enqueues the groups a unit belongs or belonged to.
func groupsOfUnit(c client.Client) handler.EventHandler {
	enqueue := func(ctx context.Context, q workqueueOfRequests, units ...*sitev1.NodeUnit) {
		var groups sitev1.NodeGroupList
		if err := c.List(ctx, &groups, client.UnsafeDisableDeepCopy); err != nil {
			log.FromContext(ctx).Error(err, "list groups")
			return
		}
		for i := range groups.Items {
			g := &groups.Items[i]
			if slices.ContainsFunc(units, func(u *sitev1.NodeUnit) bool { return sitev1.GroupHasUnit(g, u) }) {
				q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: g.Name}})
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueueOfRequests) {
			enqueue(ctx, q, e.Object.(*sitev1.NodeUnit))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueueOfRequests) {
			enqueue(ctx, q, e.ObjectOld.(*sitev1.NodeUnit), e.ObjectNew.(*sitev1.NodeUnit))
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueueOfRequests) {
			if u, ok := e.Object.(*sitev1.NodeUnit); ok {
				enqueue(ctx, q, u)
			}
		},
	}
}

// groupsForNode enqueues, for a node's change, the groups it concerns: a
// group whose autoFindNodeKeys values on the node changed (its automatic
// units), the groups of the units the node joined or left (their members
// and conflicts), and a group whose label on a node it has a conflict for
// changed (which unit the node keeps). sitegrid's own labelling of nodes
// concerns none of them.
func groupsForNode(c client.Client) handler.EventHandler {
	enqueue := func(ctx context.Context, q workqueueOfRequests, old, cur *corev1.Node) {
		var groups sitev1.NodeGroupList
		if err := c.List(ctx, &groups, client.UnsafeDisableDeepCopy); err != nil {
			log.FromContext(ctx).Error(err, "list groups")
			return
		}
		after := nodeUnits(ctx, c, cur)
		changed := unitsJoinedOrLeft(nodeUnits(ctx, c, old), after)
		for i := range groups.Items {
			g := &groups.Items[i]
			inGroup := func(u *sitev1.NodeUnit) bool { return sitev1.GroupHasUnit(g, u) }
			concerned := slices.ContainsFunc(g.Spec.AutoFindNodeKeys, func(k string) bool { return labelChanged(old, cur, k) }) ||
				slices.ContainsFunc(changed, inGroup) ||
				(labelChanged(old, cur, g.Name) && countFunc(after, inGroup) > 1)
			if concerned {
				q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: g.Name}})
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueueOfRequests) {
			enqueue(ctx, q, nil, e.Object.(*corev1.Node))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueueOfRequests) {
			enqueue(ctx, q, e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node))
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueueOfRequests) {
			if n, ok := e.Object.(*corev1.Node); ok {
				enqueue(ctx, q, n, nil)
			}
		},
	}
}

// labelChanged says whether label key differs between old and cur (a nil
// node has no labels).
func labelChanged(old, cur *corev1.Node, key string) bool {
	var ov, cv string
	var oh, ch bool
	if old != nil {
		ov, oh = old.Labels[key]
	}
	if cur != nil {
		cv, ch = cur.Labels[key]
	}
	return oh != ch || ov != cv
}

func countFunc[T any](s []T, f func(T) bool) int {
	n := 0
	for _, v := range s {
		if f(v) {
			n++
		}
	}
	return n
}
