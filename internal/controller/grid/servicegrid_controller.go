package grid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
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

// Reconcile creates or updates the Service when its desired state changed,
// and writes the grid's status on every pass: a Service the apiserver
// refuses is Valid=False and a Warning Event, a name taken by someone else
// Conflict=True and an Event.
func (r *ServiceGridReconciler) Reconcile(ctx context.Context, req reconcile.Request) (_ reconcile.Result, retErr error) {
	sg := &gridv1.ServiceGrid{}
	if err := r.Client.Get(ctx, req.NamespacedName, sg); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if sg.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	var o serviceOutcome
	defer func() { retErr = errors.Join(retErr, r.writeStatus(ctx, sg, o, retErr)) }()
	var err error
	o, err = r.apply(ctx, sg)
	if err != nil && refused(err) {
		o.refused = fmt.Sprintf("the apiserver refused Service %s: %s", ServiceName(sg.Name), apiMessage(err))
		return reconcile.Result{}, nil
	}
	return reconcile.Result{}, err
}

// serviceOutcome is what became of a ServiceGrid's Service.
type serviceOutcome struct {
	// existing is the Service of the name, when there is one.
	existing *corev1.Service
	// conflict: the name is someone else's.
	conflict bool
	// refused says why the Service cannot be written.
	refused string
}

// apply creates or updates the Service.
func (r *ServiceGridReconciler) apply(ctx context.Context, sg *gridv1.ServiceGrid) (serviceOutcome, error) {
	var o serviceOutcome
	name := ServiceName(sg.Name)
	if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
		o.refused = fmt.Sprintf("the grid's name gives Service name %q, which is not valid: %s", name, strings.Join(errs, "; "))
		return o, nil
	}
	desired, hash, err := desiredService(sg)
	if err != nil {
		return o, err
	}
	existing := &corev1.Service{}
	err = r.Client.Get(ctx, types.NamespacedName{Namespace: sg.Namespace, Name: name}, existing)
	if apierrors.IsNotFound(err) {
		// Not in the cache; someone else's Service of that name would not be.
		err = r.APIReader.Get(ctx, types.NamespacedName{Namespace: sg.Namespace, Name: name}, existing)
	}
	switch {
	case apierrors.IsNotFound(err):
		if err := controllerutil.SetControllerReference(sg, desired, r.Client.Scheme()); err != nil {
			return o, err
		}
		if err := r.Client.Create(ctx, desired); err != nil && !apierrors.IsAlreadyExists(err) {
			return o, fmt.Errorf("create Service %s: %w", name, err)
		}
		log.FromContext(ctx).Info("created Service", "grid", sg.Name, "service", name)
	case err != nil:
		return o, err
	case !metav1.IsControlledBy(existing, sg):
		o.existing, o.conflict = existing, true
	case existing.Annotations[gridv1.AnnotationTemplateHash] != hash:
		o.existing = existing
		updated := existing.DeepCopy()
		updated.Labels, updated.Annotations = desired.Labels, mergeAnnotations(existing.Annotations, desired.Annotations)
		keepAllocated(&desired.Spec, &existing.Spec)
		updated.Spec = desired.Spec
		if err := r.Client.Update(ctx, updated); err != nil {
			return o, fmt.Errorf("update Service %s: %w", name, err)
		}
		log.FromContext(ctx).Info("updated Service", "grid", sg.Name, "service", name)
	}
	return o, nil
}

// writeStatus sets Conflict, Valid and Synced from the pass, emits an
// Event for a problem that is new, and writes the status when it changed.
func (r *ServiceGridReconciler) writeStatus(ctx context.Context, sg *gridv1.ServiceGrid, o serviceOutcome, passErr error) error {
	status := sg.Status.DeepCopy()
	gen := sg.Generation
	var conflicts, invalid []unitFailure
	if o.conflict {
		conflicts = append(conflicts, unitFailure{reason: gridv1.ReasonNameTaken,
			message: fmt.Sprintf("Service %s exists and does not belong to this grid; it is left alone", ServiceName(sg.Name))})
	}
	if o.refused != "" {
		invalid = append(invalid, unitFailure{reason: gridv1.ReasonChildRefused, message: o.refused})
	}
	synced := metav1.Condition{Type: gridv1.ConditionSynced, Status: metav1.ConditionTrue, Reason: gridv1.ReasonReconcileSuccess,
		Message: "the last pass did every step", ObservedGeneration: gen}
	if passErr != nil {
		synced.Status, synced.Reason, synced.Message = metav1.ConditionFalse, gridv1.ReasonReconcileError, passErr.Error()
	} else {
		meta.SetStatusCondition(&status.Conditions, failureCondition(gridv1.ConditionConflict, metav1.ConditionTrue, conflicts,
			gridv1.ReasonNoConflict, "the Service name is free or the grid's own", gen))
		meta.SetStatusCondition(&status.Conditions, failureCondition(gridv1.ConditionValid, metav1.ConditionFalse, invalid,
			gridv1.ReasonValid, "the Service can be made", gen))
		status.ObservedGeneration = gen
		reportNew(r.Recorder, sg, sg.Status.Conditions, append(conflicts, invalid...), func(unitFailure) runtime.Object { return nil })
	}
	meta.SetStatusCondition(&status.Conditions, synced)
	if equality.Semantic.DeepEqual(status, &sg.Status) {
		return nil
	}
	patch := client.MergeFrom(sg.DeepCopy())
	sg.Status = *status
	return client.IgnoreNotFound(r.Client.Status().Patch(ctx, sg, patch))
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
			Labels:      withGridLabels(nil, sg.Name, sg.Spec.GridUniqKey),
			Annotations: map[string]string{gridv1.AnnotationTopologyKeys: string(keys)},
		},
		Spec: *sg.Spec.Template.DeepCopy(),
	}
	if _, ok := svc.Labels[gridv1.LabelGridUniqKey]; !ok {
		svc.Annotations[gridv1.AnnotationGridUniqKey] = sg.Spec.GridUniqKey
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
