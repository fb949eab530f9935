package health

import (
	"context"
	"maps"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/sitegrid/sitegrid/internal/health"
)

// +kubebuilder:rbac:groups="",resources=pods,verbs=list
// +kubebuilder:rbac:groups="",resources=pods/status,verbs=patch

// Releaser marks a NotReady node's pods not ready once its unit stops
// keeping it: its verdict turned dead, its autonomy ran out, or it opted
// out. The lifecycle controller marks a node's pods not ready only when the
// node goes NotReady; if the webhook kept them then, nothing else would, and
// Services would send traffic to a dead node until its pods are evicted.
type Releaser struct {
	Guard *Guard
	// Client writes pods' status.
	Client client.Client
	// Pods lists a node's pods, uncached: the manager keeps no pods, and a
	// node is released rarely.
	Pods client.Reader
}

// recheck is how often a kept NotReady node is decided again, for
// decisions no Lease or Node change announces (its autonomy running out
// while its whole unit is cut off).
const recheck = time.Minute

// Reconcile releases one node's pods when its unit no longer keeps it.
func (r *Releaser) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	node := &corev1.Node{}
	if err := r.Guard.Client.Get(ctx, req.NamespacedName, node); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if _, notReady := notReadySince(node); !notReady {
		return reconcile.Result{}, nil
	}
	lease, report, err := r.Guard.unitOf(ctx, node.Name)
	if err != nil || report == nil {
		return reconcile.Result{}, err // no unit vouches for it: the lifecycle controller's alone
	}
	d, err := r.Guard.DecideWithReport(ctx, node.Name, lease, report)
	if err != nil {
		return reconcile.Result{}, err
	}
	if d.Keep {
		return reconcile.Result{RequeueAfter: recheck}, nil
	}
	pods := &corev1.PodList{}
	if err := r.Pods.List(ctx, pods, client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("spec.nodeName", node.Name)}); err != nil {
		return reconcile.Result{}, err
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		ready := readyCondition(pod)
		if ready == nil || ready.Status != corev1.ConditionTrue {
			continue
		}
		before := pod.DeepCopy()
		ready.Status, ready.LastTransitionTime = corev1.ConditionFalse, metav1.Now()
		ready.Reason, ready.Message = "NodeNotReady", "sitegrid: "+d.Reason
		if err := r.Client.Status().Patch(ctx, pod, client.StrategicMergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
		logf.FromContext(ctx).Info("marked a pod not ready: its node's unit no longer keeps it", "pod", pod.Namespace+"/"+pod.Name, "node", node.Name, "reason", d.Reason)
	}
	return reconcile.Result{}, nil
}

// SetupWithManager watches NotReady nodes, and the units' reports for
// members whose verdict is not alive.
func (r *Releaser) SetupWithManager(mgr ctrl.Manager) error {
	notReady := predicate.NewPredicateFuncs(func(o client.Object) bool {
		n, ok := o.(*corev1.Node)
		if !ok {
			return false
		}
		_, nr := notReadySince(n)
		return nr
	})
	members := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		report, err := health.ParseReport(o.GetAnnotations())
		if err != nil {
			return nil
		}
		var out []reconcile.Request
		for node, v := range report.Verdicts {
			if v != health.Alive {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: node}})
			}
		}
		return out
	})
	return ctrl.NewControllerManagedBy(mgr).Named("node-health-release").
		For(&corev1.Node{}, builder.WithPredicates(notReady, predicate.Funcs{
			// A node's heartbeat does not change its decision: only
			// transitions and annotations do.
			UpdateFunc: func(e event.UpdateEvent) bool {
				o, n := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
				_, was := notReadySince(o)
				return !was || !maps.Equal(o.Annotations, n.Annotations)
			},
		})).
		Watches(&coordinationv1.Lease{}, members).
		Complete(r)
}
