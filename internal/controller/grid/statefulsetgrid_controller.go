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

// +kubebuilder:rbac:groups=superedge.io,resources=statefulsetgrids,verbs=get;list;watch
// +kubebuilder:rbac:groups=superedge.io,resources=statefulsetgrids/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=superedge.io,resources=statefulsetgrids/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete

type statefulSetSpec struct{ *appsv1.StatefulSetSpec }

func (s statefulSetSpec) podTemplate() *corev1.PodTemplateSpec { return &s.Template }
func (s statefulSetSpec) replicas() **int32                    { return &s.Replicas }
func (s statefulSetSpec) selector() **metav1.LabelSelector     { return &s.Selector }

var statefulSetKind = workloadKind[*gridv1.StatefulSetGrid, *appsv1.StatefulSet, appsv1.StatefulSetSpec]{
	kind:       "StatefulSet",
	maxNameLen: 52,
	newGrid:    func() *gridv1.StatefulSetGrid { return &gridv1.StatefulSetGrid{} },
	newChild:   func() *appsv1.StatefulSet { return &appsv1.StatefulSet{} },
	// The children are the cache's own objects: copied before any change.
	listChildren: func(ctx context.Context, c client.Client, ns, grid string) ([]*appsv1.StatefulSet, error) {
		var list appsv1.StatefulSetList
		if err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{gridv1.LabelGridSelector: grid}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		return pointers(list.Items), nil
	},
	listGrids: func(ctx context.Context, c client.Reader, opts ...client.ListOption) ([]*gridv1.StatefulSetGrid, error) {
		var list gridv1.StatefulSetGridList
		if err := c.List(ctx, &list, append(opts, client.UnsafeDisableDeepCopy)...); err != nil {
			return nil, err
		}
		return pointers(list.Items), nil
	},
	spec: func(g *gridv1.StatefulSetGrid) gridSpec[appsv1.StatefulSetSpec] {
		return gridSpec[appsv1.StatefulSetSpec]{uniqKey: g.Spec.GridUniqKey, template: g.Spec.Template, pool: g.Spec.TemplatePool,
			templates: g.Spec.Templates, defaultName: g.Spec.DefaultTemplateName, overrides: g.Spec.Overrides, rollout: g.Spec.RolloutStrategy}
	},
	status: func(g *gridv1.StatefulSetGrid) gridStatus {
		return gridStatus{counts: &g.Status.GridUnitCounts, conditions: &g.Status.Conditions, observedGeneration: &g.Status.ObservedGeneration}
	},
	statusValue: func(g *gridv1.StatefulSetGrid) any { return g.Status },
	setStates: func(g *gridv1.StatefulSetGrid, children map[string]*appsv1.StatefulSet) {
		g.Status.States = make(map[string]gridv1.StatefulSetUnitState, len(children))
		for v, c := range children {
			s := c.Status
			g.Status.States[v] = gridv1.StatefulSetUnitState{ObservedGeneration: s.ObservedGeneration, Replicas: s.Replicas,
				ReadyReplicas: s.ReadyReplicas, CurrentReplicas: s.CurrentReplicas, UpdatedReplicas: s.UpdatedReplicas,
				AvailableReplicas: s.AvailableReplicas, CurrentRevision: s.CurrentRevision, UpdateRevision: s.UpdateRevision,
				Conditions: s.Conditions}
		}
	},
	access:    func(s *appsv1.StatefulSetSpec) workloadSpec { return statefulSetSpec{s} },
	childSpec: func(d *appsv1.StatefulSet) *appsv1.StatefulSetSpec { return &d.Spec },
	copySpec:  func(s *appsv1.StatefulSetSpec) *appsv1.StatefulSetSpec { return s.DeepCopy() },
	available: statefulSetAvailable,
}

// statefulSetAvailable: the StatefulSet controller has seen the current
// spec, every replica runs the current revision, and all are ready.
func statefulSetAvailable(s *appsv1.StatefulSet) bool {
	want := int32(1)
	if s.Spec.Replicas != nil {
		want = *s.Spec.Replicas
	}
	st := s.Status
	return st.ObservedGeneration >= s.Generation && st.UpdatedReplicas == want && st.ReadyReplicas == want &&
		st.Replicas == want && (st.UpdateRevision == "" || st.CurrentRevision == st.UpdateRevision)
}

// StatefulSetGridReconciler keeps one StatefulSet per unit.
type StatefulSetGridReconciler struct {
	workloadGridReconciler[*gridv1.StatefulSetGrid, *appsv1.StatefulSet, appsv1.StatefulSetSpec]
}

// NewStatefulSetGridReconciler builds the reconciler; grace is how long a
// unit's StatefulSet outlives the last node of the unit.
func NewStatefulSetGridReconciler(c client.Client, apiReader client.Reader, recorder events.EventRecorder, clk clock.PassiveClock, grace time.Duration) *StatefulSetGridReconciler {
	return &StatefulSetGridReconciler{workloadGridReconciler[*gridv1.StatefulSetGrid, *appsv1.StatefulSet, appsv1.StatefulSetSpec]{
		client: c, apiReader: apiReader, recorder: recorder, clock: clk, grace: grace, k: statefulSetKind}}
}

// SetupWithManager registers the controller.
func (r *StatefulSetGridReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return r.setup(mgr, "statefulsetgrid")
}
