package v1alpha1

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/conversion"

	"github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// unitFields are a unit's v1alpha1 fields v1alpha2 cannot hold.
type unitFields struct {
	// Taints is spec.taints.
	Taints []corev1.Taint `json:"taints,omitempty"`
	// SetNodeTaints is setnode.taints when one has a timeAdded (v1alpha2's
	// taints have none).
	SetNodeTaints []corev1.Taint `json:"setnodeTaints,omitempty"`
}

func (f unitFields) empty() bool { return len(f.Taints) == 0 && len(f.SetNodeTaints) == 0 }

// ConvertTo converts this v1alpha1 NodeUnit to the hub (v1alpha2).
func (src *NodeUnit) ConvertTo(hub conversion.Hub) error {
	dst := hub.(*v1alpha2.NodeUnit)
	keep := unitFields{Taints: src.Spec.Taints}
	if slices.ContainsFunc(src.Spec.SetNode.Taints, func(t corev1.Taint) bool { return t.TimeAdded != nil }) {
		keep.SetNodeTaints = src.Spec.SetNode.Taints
	}
	var status v1alpha2Status
	if err := convertMeta(&src.ObjectMeta, &dst.ObjectMeta, AnnotationV1alpha2Fields, &status, AnnotationV1alpha1Fields, keep, keep.empty()); err != nil {
		return err
	}
	s := src.DeepCopy()
	dst.Spec = v1alpha2.NodeUnitSpec{
		Type:          v1alpha2.NodeUnitType(s.Spec.Type),
		Unschedulable: s.Spec.Unschedulable,
		Nodes:         s.Spec.Nodes,
		Selector:      s.Spec.Selector,
		SetNode: v1alpha2.SetNode{
			Labels:      s.Spec.SetNode.Labels,
			Annotations: s.Spec.SetNode.Annotations,
			Taints:      toHubTaints(s.Spec.SetNode.Taints),
		},
	}
	dst.Status = v1alpha2.NodeUnitStatus{
		ReadyRate:          s.Status.ReadyRate,
		ReadyNodes:         s.Status.ReadyNodes,
		NotReadyNodes:      s.Status.NotReadyNodes,
		ObservedGeneration: status.ObservedGeneration,
		Conditions:         status.Conditions,
	}
	return nil
}

// ConvertFrom converts the hub (v1alpha2) to this v1alpha1 NodeUnit.
func (dst *NodeUnit) ConvertFrom(hub conversion.Hub) error {
	src := hub.(*v1alpha2.NodeUnit).DeepCopy()
	keep := v1alpha2Status{ObservedGeneration: src.Status.ObservedGeneration, Conditions: src.Status.Conditions}
	var kept unitFields
	if err := convertMeta(&src.ObjectMeta, &dst.ObjectMeta, AnnotationV1alpha1Fields, &kept, AnnotationV1alpha2Fields, keep, keep.empty()); err != nil {
		return err
	}
	setNodeTaints := fromHubTaints(src.Spec.SetNode.Taints)
	// The kept timeAdded apply while the taints are still those they came
	// with; a v1alpha2 client that changed them wins.
	if slices.EqualFunc(toHubTaints(kept.SetNodeTaints), src.Spec.SetNode.Taints, func(a, b v1alpha2.Taint) bool { return a == b }) && len(kept.SetNodeTaints) > 0 {
		setNodeTaints = kept.SetNodeTaints
	}
	dst.Spec = NodeUnitSpec{
		Type:          NodeUnitType(src.Spec.Type),
		Unschedulable: src.Spec.Unschedulable,
		Nodes:         src.Spec.Nodes,
		Selector:      src.Spec.Selector,
		SetNode: SetNode{
			Labels:      src.Spec.SetNode.Labels,
			Annotations: src.Spec.SetNode.Annotations,
			Taints:      setNodeTaints,
		},
		Taints: kept.Taints,
	}
	dst.Status = NodeUnitStatus{
		ReadyRate:     src.Status.ReadyRate,
		ReadyNodes:    src.Status.ReadyNodes,
		NotReadyNodes: src.Status.NotReadyNodes,
	}
	return nil
}

func toHubTaints(in []corev1.Taint) []v1alpha2.Taint {
	if in == nil {
		return nil
	}
	out := make([]v1alpha2.Taint, len(in))
	for i, t := range in {
		out[i] = v1alpha2.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect}
	}
	return out
}

func fromHubTaints(in []v1alpha2.Taint) []corev1.Taint {
	if in == nil {
		return nil
	}
	out := make([]corev1.Taint, len(in))
	for i, t := range in {
		out[i] = corev1.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect}
	}
	return out
}
