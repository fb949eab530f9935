package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// NodeUnitType says where a unit's nodes run.
// +kubebuilder:validation:Enum=edge;cloud;master;other
type NodeUnitType string

// SetNode is what a unit puts on each of its member nodes.
type SetNode struct {
	// labels to put on every member node.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// annotations to put on every member node.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// taints to put on every member node.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Taints []corev1.Taint `json:"taints,omitempty"`
}

// NodeUnitSpec says which nodes form the unit and what is put on them.
// +kubebuilder:validation:XValidation:rule="(has(self.nodes) && size(self.nodes) > 0) || has(self.selector)",message="a NodeUnit needs spec.nodes (node names) or spec.selector"
type NodeUnitSpec struct {
	// type of the unit: edge (default), cloud, master or other.
	// +optional
	// +kubebuilder:default=edge
	Type NodeUnitType `json:"type"`
	// unschedulable cordons every member node.
	// +optional
	Unschedulable bool `json:"unschedulable,omitempty"`
	// nodes names member nodes directly.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=5000
	// +kubebuilder:validation:items:MaxLength=253
	Nodes []string `json:"nodes,omitempty"`
	// selector selects member nodes by their labels and annotations.
	// +optional
	Selector *v1alpha2.Selector `json:"selector,omitempty"`
	// setnode is put on every member node (v1alpha2: setNode).
	// +optional
	SetNode SetNode `json:"setnode,omitempty"`
	// taints of the unit itself, for a scheduler to choose units by. sitegrid
	// does not act on them; v1alpha2 has no such field, so they are kept in
	// an annotation of the stored object.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Taints []corev1.Taint `json:"taints,omitempty"`
}

// NodeUnitStatus is the observed state of a unit.
type NodeUnitStatus struct {
	// readyrate is "ready/members", for example "2/3".
	// +optional
	ReadyRate string `json:"readyrate,omitempty"`
	// readynodes are the member nodes whose Ready condition is True.
	// +optional
	// +listType=atomic
	ReadyNodes []string `json:"readynodes,omitempty"`
	// notreadynodes are the other member nodes.
	// +optional
	// +listType=atomic
	NotReadyNodes []string `json:"notreadynodes,omitempty"`
}

// NodeUnit is the set of nodes of one edge site, in SuperEdge's v1alpha1
// shape.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=nu,categories=sitegrid
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.readyrate`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeUnit struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// +optional
	Spec NodeUnitSpec `json:"spec,omitempty"`
	// +optional
	Status NodeUnitStatus `json:"status,omitempty"`
}

// NodeUnitList is a list of NodeUnits.
// +kubebuilder:object:root=true
type NodeUnitList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeUnit `json:"items"`
}
