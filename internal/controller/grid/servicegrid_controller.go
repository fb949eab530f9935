package grid

import (
	"context"
	"encoding/json"
	"fmt"

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
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// +kubebuilder:rbac:groups=superedge.io,resources=servicegrids,verbs=get;list;watch
// +kubebuilder:rbac:groups=superedge.io,resources=servicegrids/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=superedge.io,resources=servicegrids/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete

// ServiceGridReconciler keeps the Service <name>-svc of a ServiceGrid, with
// the topology annotation the edge hub reads to keep traffic in the unit.
type ServiceGridReconciler struct {
	Client client.Client
	// APIReader reads from the apiserver: the cache holds only Services
	// with the grid label.
	APIReader client.Reader
	Recorder  events.EventRecorder
}

// ServiceName is the Service a ServiceGrid yields.
func ServiceName(grid string) string { return grid + "-svc" }

// Reconcile creates or updates the Service when its desired state changed.
func (r *ServiceGridReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	sg := &gridv1.ServiceGrid{}
	if err := r.Client.Get(ctx, req.NamespacedName, sg); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if sg.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	desired, hash, err := desiredService(sg)
	if err != nil {
		return reconcile.Result{}, err
	}
	status := sg.Status.DeepCopy()
	conflict := ""
	existing := &corev1.Service{}
	err = r.Client.Get(ctx, types.NamespacedName{Namespace: sg.Namespace, Name: desired.Name}, existing)
	if apierrors.IsNotFound(err) {
		// Not in the cache; someone else's Service of that name would not be.
		err = r.APIReader.Get(ctx, types.NamespacedName{Namespace: sg.Namespace, Name: desired.Name}, existing)
	}
	switch {
	case apierrors.IsNotFound(err):
		if err := controllerutil.SetControllerReference(sg, desired, r.Client.Scheme()); err != nil {
			return reconcile.Result{}, err
		}
		if err := r.Client.Create(ctx, desired); err != nil && !apierrors.IsAlreadyExists(err) {
			return reconcile.Result{}, fmt.Errorf("create Service %s: %w", desired.Name, err)
		}
		log.FromContext(ctx).Info("created Service", "grid", sg.Name, "service", desired.Name)
	case err != nil:
		return reconcile.Result{}, err
	case !metav1.IsControlledBy(existing, sg):
		conflict = desired.Name
	case existing.Annotations[gridv1.AnnotationTemplateHash] != hash:
		updated := existing.DeepCopy()
		updated.Labels, updated.Annotations = desired.Labels, mergeAnnotations(existing.Annotations, desired.Annotations)
		keepAllocated(&desired.Spec, &existing.Spec)
		updated.Spec = desired.Spec
		if err := r.Client.Update(ctx, updated); err != nil {
			return reconcile.Result{}, fmt.Errorf("update Service %s: %w", desired.Name, err)
		}
		log.FromContext(ctx).Info("updated Service", "grid", sg.Name, "service", desired.Name)
	}
	cond := metav1.Condition{Type: gridv1.ConditionConflict, Status: metav1.ConditionFalse, Reason: gridv1.ReasonNoConflict,
		Message: "the Service name is free or the grid's own", ObservedGeneration: sg.Generation}
	if conflict != "" {
		cond.Status, cond.Reason = metav1.ConditionTrue, gridv1.ReasonNameTaken
		cond.Message = fmt.Sprintf("Service %s exists and does not belong to this grid; it is left alone", conflict)
		if !meta.IsStatusConditionTrue(sg.Status.Conditions, gridv1.ConditionConflict) {
			r.Recorder.Eventf(sg, existing, corev1.EventTypeWarning, gridv1.ReasonNameTaken, "CreateService", "%s", cond.Message)
		}
	}
	meta.SetStatusCondition(&status.Conditions, cond)
	status.ObservedGeneration = sg.Generation
	if !equality.Semantic.DeepEqual(status, &sg.Status) {
		patch := client.MergeFrom(sg.DeepCopy())
		sg.Status = *status
		if err := r.Client.Status().Patch(ctx, sg, patch); err != nil {
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
	}
	return reconcile.Result{}, nil
}

// desiredService is the Service of a grid: the template, the grid's labels,
// and the topology annotation (a JSON array holding gridUniqKey).
func desiredService(sg *gridv1.ServiceGrid) (*corev1.Service, string, error) {
	keys, err := json.Marshal([]string{sg.Spec.GridUniqKey})
	if err != nil {
		return nil, "", err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name: ServiceName(sg.Name), Namespace: sg.Namespace,
			Labels:      map[string]string{gridv1.LabelGridSelector: sg.Name, gridv1.LabelGridUniqKey: sg.Spec.GridUniqKey},
			Annotations: map[string]string{gridv1.AnnotationTopologyKeys: string(keys)},
		},
		Spec: *sg.Spec.Template.DeepCopy(),
	}
	hash, err := specHash([]any{svc.Labels, svc.Annotations, svc.Spec})
	if err != nil {
		return nil, "", err
	}
	svc.Annotations[gridv1.AnnotationTemplateHash] = hash
	return svc, hash, nil
}

// keepAllocated carries over what the apiserver allocated and the template
// leaves empty: cluster IPs (immutable), IP families and node ports.
func keepAllocated(desired, existing *corev1.ServiceSpec) {
	if desired.ClusterIP == "" {
		desired.ClusterIP, desired.ClusterIPs = existing.ClusterIP, existing.ClusterIPs
	}
	if len(desired.IPFamilies) == 0 {
		desired.IPFamilies = existing.IPFamilies
	}
	if desired.IPFamilyPolicy == nil {
		desired.IPFamilyPolicy = existing.IPFamilyPolicy
	}
	for i := range desired.Ports {
		if desired.Ports[i].NodePort != 0 {
			continue
		}
		for _, p := range existing.Ports {
			if p.Port == desired.Ports[i].Port && p.Protocol == desired.Ports[i].Protocol {
				desired.Ports[i].NodePort = p.NodePort
			}
		}
	}
}

func mergeAnnotations(have, want map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range have {
		out[k] = v
	}
	for k, v := range want {
		out[k] = v
	}
	return out
}

// SetupWithManager registers the controller.
func (r *ServiceGridReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("servicegrid").
		For(&gridv1.ServiceGrid{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.Service{}).
		Complete(r)
}
