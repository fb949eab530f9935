// Package health is the control plane acting on units' verdicts
// (internal/health): a mutating admission webhook that stands between
// kube-controller-manager's node lifecycle controller and the nodes a unit
// vouches for, so a node cut off from the cloud but alive keeps its pods
// (Ready, in EndpointSlices and Endpoints) instead of having them evicted,
// while a node its unit judges dead is handled the normal Kubernetes way. It
// works with the lifecycle controller left on, as managed clusters require.
//
// The webhook sees only the lifecycle controller's own requests (its
// matchConditions name the controller's users), fails open
// (failurePolicy Ignore) and answers within its short timeout from the
// manager's informer caches, so an outage of the manager never blocks the
// cluster: the lifecycle controller then does what it always does.
package health

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/internal/health"
)

// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=sitegrid-health,resources=leases,verbs=get;list;watch

// The lifecycle controller's taints that evict a node's pods.
var evictingTaints = []string{corev1.TaintNodeUnreachable, corev1.TaintNodeNotReady}

// Guard decides, for a NotReady node, whether its unit keeps it.
type Guard struct {
	// Client reads Nodes, NodeUnits and the units' Leases (cached).
	Client client.Reader
	Clock  clock.PassiveClock
	// MaxAutonomy bounds how long a NotReady node is kept (default for
	// nodes and units without health.MaxAutonomyAnnotation); 0: no bound.
	MaxAutonomy time.Duration
}

// Decision is the Guard's answer about one node, with its reason.
type Decision struct {
	Keep   bool
	Reason string
}

// Decide says whether node's pods are kept although the cloud cannot see
// the node.
func (g *Guard) Decide(ctx context.Context, nodeName string) (Decision, error) {
	lease, report, err := g.unitOf(ctx, nodeName)
	if err != nil {
		return Decision{}, err
	}
	return g.DecideWithReport(ctx, nodeName, lease, report)
}

// DecideWithReport is Decide for a caller that has the node's unit report
// already (sitegridctl site health, whose client has no MemberIndex); nil
// when no unit reports on the node.
func (g *Guard) DecideWithReport(ctx context.Context, nodeName string, lease *coordinationv1.Lease, report *health.Report) (Decision, error) {
	node := &corev1.Node{}
	if err := g.Client.Get(ctx, client.ObjectKey{Name: nodeName}, node); err != nil {
		if apierrors.IsNotFound(err) {
			return Decision{Reason: "node not found"}, nil
		}
		return Decision{}, err
	}
	if node.Annotations[health.AutonomyAnnotation] == "false" {
		return Decision{Reason: "node opted out (" + health.AutonomyAnnotation + "=false)"}, nil
	}
	if report == nil {
		return Decision{Reason: "no unit reports on this node"}, nil
	}
	var d Decision
	unit := &sitev1.NodeUnit{}
	if err := g.Client.Get(ctx, client.ObjectKey{Name: report.Unit}, unit); err != nil && !apierrors.IsNotFound(err) {
		return Decision{}, err
	}
	if unit.Annotations[health.AutonomyAnnotation] == "false" {
		d.Reason = "unit opted out (" + health.AutonomyAnnotation + "=false)"
		return d, nil
	}
	limit := g.MaxAutonomy
	for _, annotations := range []map[string]string{unit.Annotations, node.Annotations} {
		if v, ok := annotations[health.MaxAutonomyAnnotation]; ok {
			if parsed, err := time.ParseDuration(v); err == nil && parsed >= 0 {
				limit = parsed
			}
		}
	}
	now := g.Clock.Now()
	if since, notReady := notReadySince(node); notReady && limit > 0 && now.Sub(since) > limit {
		d.Reason = fmt.Sprintf("NotReady for %s, longer than the maximum autonomy %s", now.Sub(since).Round(time.Second), limit)
		return d, nil
	}
	if Stale(lease, now) {
		d.Keep, d.Reason = true, "no member of unit "+report.Unit+" reaches the cloud (its report is stale)"
		return d, nil
	}
	switch v := report.Verdicts[nodeName]; v {
	case health.Alive:
		d.Keep, d.Reason = true, "unit "+report.Unit+" says it is alive"
	case health.Dead:
		d.Reason = "unit " + report.Unit + " judges it dead"
	default:
		d.Keep, d.Reason = true, fmt.Sprintf("unit %s cannot tell (%s): kept until the maximum autonomy", report.Unit, v)
	}
	return d, nil
}

// MemberIndex indexes the units' Leases by the members their reports list,
// so a decision (one per node and pod update of the lifecycle controller)
// finds its unit without parsing every unit's report; reports are parsed
// once per Lease update, by the informer.
const MemberIndex = "health.sitegrid.io/member"

// IndexMembers is MemberIndex's extractor.
func IndexMembers(obj client.Object) []string {
	r, err := health.ParseReport(obj.GetAnnotations())
	if err != nil {
		return nil
	}
	return r.Members
}

// unitOf finds the report that lists node as a member (Client must index
// Leases with MemberIndex).
func (g *Guard) unitOf(ctx context.Context, nodeName string) (*coordinationv1.Lease, *health.Report, error) {
	leases := &coordinationv1.LeaseList{}
	if err := g.Client.List(ctx, leases, client.InNamespace(health.Namespace), client.MatchingFields{MemberIndex: nodeName}); err != nil {
		return nil, nil, err
	}
	for i := range leases.Items {
		if r, err := health.ParseReport(leases.Items[i].Annotations); err == nil {
			return &leases.Items[i], r, nil
		}
	}
	return nil, nil, nil
}

// Stale says a unit's Lease has not been renewed within its duration: no
// member of the unit reaches the cloud.
func Stale(l *coordinationv1.Lease, now time.Time) bool {
	if l == nil || l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return true
	}
	return now.After(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second))
}

// notReadySince is when the node's Ready condition stopped being True.
func notReadySince(n *corev1.Node) (time.Time, bool) {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.LastTransitionTime.Time, c.Status != corev1.ConditionTrue
		}
	}
	return time.Time{}, false
}

// Webhook is the admission handler for the lifecycle controller's node and
// pod status updates.
type Webhook struct {
	Guard   *Guard
	Decoder admission.Decoder
}

// Handle strips the evicting NoExecute taints from a node update, and keeps
// a pod's Ready condition in a pod status update, when the guard keeps the
// node; anything else passes unchanged.
func (w *Webhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	log := logf.FromContext(ctx)
	switch {
	case req.Kind.Kind == "Node" && req.SubResource == "":
		node, old := &corev1.Node{}, &corev1.Node{}
		if err := w.decodeUpdate(req, node, old); err != nil {
			return admission.Errored(http.StatusBadRequest, err)
		}
		added := addedEvictingTaints(old, node)
		if len(added) == 0 {
			return admission.Allowed("no evicting taint added")
		}
		d, err := w.Guard.Decide(ctx, node.Name)
		if err != nil {
			return admission.Allowed("cannot decide: " + err.Error())
		}
		if !d.Keep {
			log.Info("node goes the normal way", "node", node.Name, "reason", d.Reason)
			return admission.Allowed(d.Reason)
		}
		node.Spec.Taints = slices.DeleteFunc(node.Spec.Taints, func(t corev1.Taint) bool { return slices.Contains(added, t.Key+":"+string(t.Effect)) })
		log.Info("kept the node's pods: no NoExecute taint", "node", node.Name, "taints", added, "reason", d.Reason)
		return patched(req.Object.Raw, node, d.Reason)
	case req.Kind.Kind == "Pod" && req.SubResource == "status":
		pod, old := &corev1.Pod{}, &corev1.Pod{}
		if err := w.decodeUpdate(req, pod, old); err != nil {
			return admission.Errored(http.StatusBadRequest, err)
		}
		was, now := readyCondition(old), readyCondition(pod)
		if was == nil || now == nil || was.Status != corev1.ConditionTrue || now.Status == corev1.ConditionTrue || pod.Spec.NodeName == "" {
			return admission.Allowed("readiness not taken away")
		}
		d, err := w.Guard.Decide(ctx, pod.Spec.NodeName)
		if err != nil {
			return admission.Allowed("cannot decide: " + err.Error())
		}
		if !d.Keep {
			return admission.Allowed(d.Reason)
		}
		*now = *was
		log.V(1).Info("kept the pod Ready", "pod", pod.Namespace+"/"+pod.Name, "node", pod.Spec.NodeName, "reason", d.Reason)
		return patched(req.Object.Raw, pod, d.Reason)
	}
	return admission.Allowed("not a request this webhook changes")
}

// decodeUpdate reads an update's new and old objects.
func (w *Webhook) decodeUpdate(req admission.Request, obj, old runtime.Object) error {
	if err := w.Decoder.DecodeRaw(req.Object, obj); err != nil {
		return err
	}
	return w.Decoder.DecodeRaw(req.OldObject, old)
}

func patched(raw []byte, obj any, reason string) admission.Response {
	b, err := json.Marshal(obj)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	resp := admission.PatchResponseFromRaw(raw, b)
	resp.Warnings = append(resp.Warnings, "sitegrid: "+reason)
	return resp
}

// addedEvictingTaints lists "key:NoExecute" of the evicting taints node has
// and old had not.
func addedEvictingTaints(old, node *corev1.Node) []string {
	var out []string
	for _, t := range node.Spec.Taints {
		if t.Effect != corev1.TaintEffectNoExecute || !slices.Contains(evictingTaints, t.Key) {
			continue
		}
		if !slices.ContainsFunc(old.Spec.Taints, func(o corev1.Taint) bool { return o.Key == t.Key && o.Effect == t.Effect }) {
			out = append(out, t.Key+":"+string(t.Effect))
		}
	}
	return out
}

func readyCondition(p *corev1.Pod) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodReady {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}
