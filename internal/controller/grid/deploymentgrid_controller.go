package grid

import (
	"context"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// +kubebuilder:rbac:groups=superedge.io,resources=deploymentgrids,verbs=get;list;watch
// +kubebuilder:rbac:groups=superedge.io,resources=deploymentgrids/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=superedge.io,resources=deploymentgrids/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=site.superedge.io,resources=nodeunits,verbs=get;list;watch

type deploymentSpec struct{ *appsv1.DeploymentSpec }

func (s deploymentSpec) podTemplate() *corev1.PodTemplateSpec { return &s.Template }
func (s deploymentSpec) replicas() **int32                    { return &s.Replicas }
func (s deploymentSpec) selector() **metav1.LabelSelector     { return &s.Selector }

var deploymentKind = workloadKind[*gridv1.DeploymentGrid, *appsv1.Deployment, appsv1.DeploymentSpec]{
	kind:       "Deployment",
	maxNameLen: 253,
	newGrid:    func() *gridv1.DeploymentGrid { return &gridv1.DeploymentGrid{} },
	newChild:   func() *appsv1.Deployment { return &appsv1.Deployment{} },
	// The children are the cache's own objects: copied before any change.
	listChildren: func(ctx context.Context, c client.Client, ns, grid string) ([]*appsv1.Deployment, error) {
		var list appsv1.DeploymentList
		if err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{gridv1.LabelGridSelector: grid}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		return pointers(list.Items), nil
	},
	listGrids: func(ctx context.Context, c client.Reader, opts ...client.ListOption) ([]*gridv1.DeploymentGrid, error) {
		var list gridv1.DeploymentGridList
		if err := c.List(ctx, &list, append(opts, client.UnsafeDisableDeepCopy)...); err != nil {
			return nil, err
		}
		return pointers(list.Items), nil
	},
	spec: func(g *gridv1.DeploymentGrid) gridSpec[appsv1.DeploymentSpec] {
		return gridSpec[appsv1.DeploymentSpec]{uniqKey: g.Spec.GridUniqKey, template: g.Spec.Template, pool: g.Spec.TemplatePool,
			templates: g.Spec.Templates, defaultName: g.Spec.DefaultTemplateName, overrides: g.Spec.Overrides, rollout: g.Spec.RolloutStrategy}
	},
	status: func(g *gridv1.DeploymentGrid) gridStatus {
		return gridStatus{counts: &g.Status.GridUnitCounts, conditions: &g.Status.Conditions, observedGeneration: &g.Status.ObservedGeneration}
	},
	statusValue: func(g *gridv1.DeploymentGrid) any { return g.Status },
	setStates: func(g *gridv1.DeploymentGrid, children map[string]*appsv1.Deployment) {
		g.Status.States = make(map[string]gridv1.DeploymentUnitState, len(children))
		for v, c := range children {
			s := c.Status
			g.Status.States[v] = gridv1.DeploymentUnitState{ObservedGeneration: s.ObservedGeneration, Replicas: s.Replicas,
				UpdatedReplicas: s.UpdatedReplicas, ReadyReplicas: s.ReadyReplicas, AvailableReplicas: s.AvailableReplicas,
				UnavailableReplicas: s.UnavailableReplicas, Conditions: s.Conditions}
		}
	},
	access:    func(s *appsv1.DeploymentSpec) workloadSpec { return deploymentSpec{s} },
	childSpec: func(d *appsv1.Deployment) *appsv1.DeploymentSpec { return &d.Spec },
	copySpec:  func(s *appsv1.DeploymentSpec) *appsv1.DeploymentSpec { return s.DeepCopy() },
	available: deploymentAvailable,
}

// deploymentAvailable: the Deployment controller has seen the current spec,
// every replica runs it, and all are available.
func deploymentAvailable(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want
}

// DeploymentGridReconciler keeps one Deployment per unit.
type DeploymentGridReconciler struct {
	workloadGridReconciler[*gridv1.DeploymentGrid, *appsv1.Deployment, appsv1.DeploymentSpec]
}

// NewDeploymentGridReconciler builds the reconciler; grace is how long a
// unit's Deployment outlives the last node of the unit.
func NewDeploymentGridReconciler(c client.Client, apiReader client.Reader, recorder events.EventRecorder, clk clock.PassiveClock, grace time.Duration) *DeploymentGridReconciler {
	return &DeploymentGridReconciler{workloadGridReconciler[*gridv1.DeploymentGrid, *appsv1.Deployment, appsv1.DeploymentSpec]{
		client: c, apiReader: apiReader, recorder: recorder, clock: clk, grace: grace, k: deploymentKind}}
}

// SetupWithManager registers the controller.
func (r *DeploymentGridReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return r.setup(mgr, "deploymentgrid")
}
