package v1alpha1

import (
	"sigs.k8s.io/controller-runtime/pkg/conversion"

	"github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// groupFields are a group's v1alpha1 fields v1alpha2 cannot hold.
type groupFields struct {
	Workload       []Workload       `json:"workload,omitempty"`
	WorkloadStatus []WorkloadStatus `json:"workloadstatus,omitempty"`
}

func (f groupFields) empty() bool { return len(f.Workload) == 0 && len(f.WorkloadStatus) == 0 }

// ConvertTo converts this v1alpha1 NodeGroup to the hub (v1alpha2).
func (src *NodeGroup) ConvertTo(hub conversion.Hub) error {
	dst := hub.(*v1alpha2.NodeGroup)
	s := src.DeepCopy()
	keep := groupFields{Workload: s.Spec.Workload, WorkloadStatus: s.Status.WorkloadStatus}
	var status v1alpha2Status
	if err := convertMeta(&s.ObjectMeta, &dst.ObjectMeta, AnnotationV1alpha2Fields, &status, AnnotationV1alpha1Fields, keep, keep.empty()); err != nil {
		return err
	}
	dst.Spec = v1alpha2.NodeGroupSpec{NodeUnits: s.Spec.NodeUnits, Selector: s.Spec.Selector, AutoFindNodeKeys: s.Spec.AutoFindNodeKeys}
	dst.Status = v1alpha2.NodeGroupStatus{
		UnitNumber: s.Status.UnitNumber, NodeUnits: s.Status.NodeUnits,
		ObservedGeneration: status.ObservedGeneration, Conditions: status.Conditions,
	}
	return nil
}

// ConvertFrom converts the hub (v1alpha2) to this v1alpha1 NodeGroup.
func (dst *NodeGroup) ConvertFrom(hub conversion.Hub) error {
	src := hub.(*v1alpha2.NodeGroup).DeepCopy()
	keep := v1alpha2Status{ObservedGeneration: src.Status.ObservedGeneration, Conditions: src.Status.Conditions}
	var kept groupFields
	if err := convertMeta(&src.ObjectMeta, &dst.ObjectMeta, AnnotationV1alpha1Fields, &kept, AnnotationV1alpha2Fields, keep, keep.empty()); err != nil {
		return err
	}
	dst.Spec = NodeGroupSpec{NodeUnits: src.Spec.NodeUnits, Selector: src.Spec.Selector, AutoFindNodeKeys: src.Spec.AutoFindNodeKeys, Workload: kept.Workload}
	dst.Status = NodeGroupStatus{UnitNumber: src.Status.UnitNumber, NodeUnits: src.Status.NodeUnits, WorkloadStatus: kept.WorkloadStatus}
	return nil
}
