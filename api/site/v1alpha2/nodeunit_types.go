package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeUnitType says where a unit's nodes run.
// +kubebuilder:validation:Enum=edge;cloud;master;other
type NodeUnitType string

// Unit types.
const (
	EdgeNodeUnit   NodeUnitType = "edge"
	CloudNodeUnit  NodeUnitType = "cloud"
	MasterNodeUnit NodeUnitType = "master"
	OtherNodeUnit  NodeUnitType = "other"
)

// NodeUnitSpec says which nodes form the unit and what is put on them.
// +kubebuilder:validation:XValidation:rule="(has(self.nodes) && size(self.nodes) > 0) || has(self.selector)",message="a NodeUnit needs spec.nodes (node names) or spec.selector"
type NodeUnitSpec struct {
	// type of the unit: edge (default), cloud, master or other.
	// +optional
	// +kubebuilder:default=edge
	Type NodeUnitType `json:"type,omitempty"`

	// unschedulable cordons every member node; setting it back to false
	// uncordons the nodes the unit cordoned.
	// +optional
	Unschedulable bool `json:"unschedulable,omitempty"`

	// nodes names member nodes directly.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=5000
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Nodes []string `json:"nodes,omitempty"`

	// selector selects member nodes by their labels and annotations.
	// +optional
	Selector *Selector `json:"selector,omitempty"`

	// setNode is put on every member node.
	// +optional
	SetNode SetNode `json:"setNode,omitempty"`
}

// NodeUnitStatus is the observed state of a unit.
type NodeUnitStatus struct {
	// readyRate is "ready/members", for example "2/3".
	// +optional
	ReadyRate string `json:"readyRate,omitempty"`

	// readyNodes are the member nodes whose Ready condition is True.
	// +optional
	// +listType=atomic
	ReadyNodes []string `json:"readyNodes,omitempty"`

	// notReadyNodes are the other member nodes.
	// +optional
	// +listType=atomic
	NotReadyNodes []string `json:"notReadyNodes,omitempty"`

	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready (all members Ready) and Conflict (members claimed by
	// another unit of the same group).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NodeUnit is the set of nodes of one edge site.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:storageversion
// +kubebuilder:resource:scope=Cluster,shortName=nu,categories=sitegrid
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.readyRate`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="a NodeUnit name is used as a node label value, so it must be at most 63 characters"
type NodeUnit struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec NodeUnitSpec `json:"spec"`
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
