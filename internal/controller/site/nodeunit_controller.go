package site

import (
	"context"
	"fmt"
	"maps"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// +kubebuilder:rbac:groups=site.superedge.io,resources=nodeunits,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=site.superedge.io,resources=nodeunits/status,verbs=get;update;patch

// NodeUnitReconciler keeps a unit's status: its ready rate, the lists of
// ready and not-ready members, and whether its setNode can be put on nodes.
type NodeUnitReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
}

// Reconcile recomputes one unit's status and writes it if it changed.
func (r *NodeUnitReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	unit := &sitev1.NodeUnit{}
	if err := r.Client.Get(ctx, req.NamespacedName, unit); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if unit.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	status := unit.Status.DeepCopy()
	members, err := unitMembers(ctx, r.Client, unit)
	if err != nil {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: sitev1.UnitReady, Status: metav1.ConditionFalse,
			Reason: sitev1.ReasonBadSelector, Message: err.Error(), ObservedGeneration: unit.Generation})
	} else {
		setMemberStatus(status, members, unit.Generation)
	}
	r.setSetNodeCondition(unit, status)
	status.ObservedGeneration = unit.Generation
	if equality.Semantic.DeepEqual(status, &unit.Status) {
		return reconcile.Result{}, nil
	}
	patch := client.MergeFrom(unit.DeepCopy())
	unit.Status = *status
	if err := r.Client.Status().Patch(ctx, unit, patch); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	log.FromContext(ctx).V(1).Info("unit status updated", "unit", unit.Name, "readyRate", status.ReadyRate)
	return reconcile.Result{}, nil
}

// setSetNodeCondition sets sitev1.UnitSetNodeValid and, when the unit's setNode
// turns invalid, tells the user in an Event: the manager's log is not where
// a user looks.
func (r *NodeUnitReconciler) setSetNodeCondition(unit *sitev1.NodeUnit, status *sitev1.NodeUnitStatus) {
	cond := metav1.Condition{Type: sitev1.UnitSetNodeValid, Status: metav1.ConditionTrue, Reason: sitev1.ReasonSetNodeValid,
		Message: "setNode is put on every member node", ObservedGeneration: unit.Generation}
	if problems := InvalidSetNode(unit.Spec.SetNode); len(problems) > 0 {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, sitev1.ReasonInvalidSetNode, setNodeMessage(problems)
		if prev := meta.FindStatusCondition(unit.Status.Conditions, sitev1.UnitSetNodeValid); prev == nil || prev.Message != cond.Message {
			r.Recorder.Eventf(unit, nil, corev1.EventTypeWarning, sitev1.ReasonInvalidSetNode, "SetNode", "%s", cond.Message)
		}
	}
	meta.SetStatusCondition(&status.Conditions, cond)
}

func setMemberStatus(status *sitev1.NodeUnitStatus, members []*corev1.Node, generation int64) {
	ready, notReady := []string{}, []string{}
	for _, n := range members {
		if nodeReady(n) {
			ready = append(ready, n.Name)
		} else {
			notReady = append(notReady, n.Name)
		}
	}
	status.ReadyNodes, status.NotReadyNodes = ready, notReady
	status.ReadyRate = strconv.Itoa(len(ready)) + "/" + strconv.Itoa(len(members))
	cond := metav1.Condition{Type: sitev1.UnitReady, ObservedGeneration: generation}
	switch {
	case len(members) == 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, sitev1.ReasonNoNodes, "no node matches the unit"
	case len(notReady) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, sitev1.ReasonNodesNotReady
		cond.Message = fmt.Sprintf("%d of %d nodes not Ready: %s", len(notReady), len(members), firstNames(notReady, 5))
	default:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, sitev1.ReasonAllNodesReady, fmt.Sprintf("all %d nodes Ready", len(members))
	}
	meta.SetStatusCondition(&status.Conditions, cond)
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func firstNames(names []string, n int) string {
	if len(names) <= n {
		return fmt.Sprint(names)
	}
	return fmt.Sprintf("%v and %d more", names[:n], len(names)-n)
}

// SetupWithManager registers the controller: a unit is reconciled when it
// changes and when a node that is or was a member changes membership or
// readiness.
func (r *NodeUnitReconciler) SetupWithManager(mgr ctrl.Manager) error {
	c := mgr.GetClient()
	return ctrl.NewControllerManagedBy(mgr).
		Named("site-nodeunit").
		For(&sitev1.NodeUnit{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Node{}, unitWatch(c)).
		Complete(r)
}

// unitWatch enqueues, for a node's change, the units whose status it can
// change: a unit's status is its members and their readiness.
func unitWatch(c client.Reader) handler.Funcs {
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueueOfRequests) {
			addUnits(q, nodeUnits(ctx, c, e.Object.(*corev1.Node)))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueueOfRequests) {
			o, n := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
			readiness := nodeReady(o) != nodeReady(n)
			if !readiness && maps.Equal(o.Labels, n.Labels) && maps.Equal(o.Annotations, n.Annotations) {
				return
			}
			// A unit's status is its members and their readiness: a
			// relabel concerns only the units the node joined or left.
			before, after := nodeUnits(ctx, c, o), nodeUnits(ctx, c, n)
			if readiness {
				addUnits(q, before)
				addUnits(q, after)
				return
			}
			addUnits(q, unitsJoinedOrLeft(before, after))
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueueOfRequests) {
			if n, ok := e.Object.(*corev1.Node); ok {
				addUnits(q, nodeUnits(ctx, c, n))
			}
		},
	}
}

// addUnits enqueues units.
func addUnits(q workqueueOfRequests, units []*sitev1.NodeUnit) {
	for _, u := range units {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: u.Name}})
	}
}
