package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// Workload names a workload bound to a group. SuperEdge lists them; sitegrid
// does not act on them (grids bind workloads to groups by gridUniqKey), and
// keeps them in an annotation of the stored object.
type Workload struct {
	// name of the workload.
	// +optional
	Name string `json:"name,omitempty"`
	// type of the workload, for example Deployment.
	// +optional
	Type string `json:"type,omitempty"`
	// selector of the workload.
	// +optional
	Selector *WorkloadSelector `json:"selector,omitempty"`
}

// WorkloadSelector is a workload's selector as SuperEdge writes it; kept,
// not acted on, so it carries none of the validation of a unit's selector.
type WorkloadSelector struct {
	// +optional
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
	// +optional
	// +listType=atomic
	MatchExpressions []metav1.LabelSelectorRequirement `json:"matchExpressions,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// NodeGroupSpec says which units form the group.
// +kubebuilder:validation:XValidation:rule="(has(self.nodeunits) && size(self.nodeunits) > 0) || has(self.selector) || (has(self.autofindnodekeys) && size(self.autofindnodekeys) > 0)",message="a NodeGroup needs spec.nodeunits, spec.selector or spec.autofindnodekeys"
type NodeGroupSpec struct {
	// nodeunits names member units directly (v1alpha2: nodeUnits).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=5000
	NodeUnits []string `json:"nodeunits,omitempty"`
	// selector selects member units by their labels and annotations.
	// +optional
	Selector *v1alpha2.Selector `json:"selector,omitempty"`
	// autofindnodekeys are node label keys: one unit per distinct
	// combination of their values (v1alpha2: autoFindNodeKeys).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	AutoFindNodeKeys []string `json:"autofindnodekeys,omitempty"`
	// workload lists workloads bound to the group (kept, not acted on).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Workload []Workload `json:"workload,omitempty"`
}

// WorkloadStatus is SuperEdge's per-workload status of a group (kept, never
// written by sitegrid).
type WorkloadStatus struct {
	// workloadname of the workload.
	// +optional
	WorkloadName string `json:"workloadname,omitempty"`
	// readyunit are the units where it is ready.
	// +optional
	// +listType=atomic
	ReadyUnit []string `json:"readyunit,omitempty"`
	// notreadyunit are the units where it is not.
	// +optional
	// +listType=atomic
	NotReadyUnit []string `json:"notreadyunit,omitempty"`
}

// NodeGroupStatus is the observed state of a group.
type NodeGroupStatus struct {
	// unitnumber is the number of member units.
	// +optional
	UnitNumber int `json:"unitnumber,omitempty"`
	// nodeunits are the member units.
	// +optional
	// +listType=atomic
	NodeUnits []string `json:"nodeunits,omitempty"`
	// workloadstatus is kept from SuperEdge, never written by sitegrid.
	// +optional
	// +listType=atomic
	WorkloadStatus []WorkloadStatus `json:"workloadstatus,omitempty"`
}

// NodeGroup is a set of units, in SuperEdge's v1alpha1 shape.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ng,categories=sitegrid
// +kubebuilder:printcolumn:name="Units",type=integer,JSONPath=`.status.unitnumber`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeGroup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// +optional
	Spec NodeGroupSpec `json:"spec,omitempty"`
	// +optional
	Status NodeGroupStatus `json:"status,omitempty"`
}

// NodeGroupList is a list of NodeGroups.
// +kubebuilder:object:root=true
type NodeGroupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeGroup `json:"items"`
}
