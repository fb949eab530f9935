package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeGroupSpec says which units form the group.
// +kubebuilder:validation:XValidation:rule="(has(self.nodeUnits) && size(self.nodeUnits) > 0) || has(self.selector) || (has(self.autoFindNodeKeys) && size(self.autoFindNodeKeys) > 0)",message="a NodeGroup needs spec.nodeUnits, spec.selector or spec.autoFindNodeKeys"
type NodeGroupSpec struct {
	// nodeUnits names member units directly.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=5000
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	NodeUnits []string `json:"nodeUnits,omitempty"`

	// selector selects member units by their labels and annotations.
	// +optional
	Selector *Selector `json:"selector,omitempty"`

	// autoFindNodeKeys are node label keys: one NodeUnit is created per
	// distinct combination of their values among the nodes that carry all of
	// them, and removed when no node carries it any more.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=317
	// +kubebuilder:validation:items:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`
	AutoFindNodeKeys []string `json:"autoFindNodeKeys,omitempty"`
}

// NodeGroupStatus is the observed state of a group.
type NodeGroupStatus struct {
	// unitNumber is the number of member units.
	// +optional
	UnitNumber int `json:"unitNumber,omitempty"`

	// nodeUnits are the member units.
	// +optional
	// +listType=atomic
	NodeUnits []string `json:"nodeUnits,omitempty"`

	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Conflict (a node claimed by two member units).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NodeGroup is a set of units; its name is the node label key whose value
// names each member node's unit.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:storageversion
// +kubebuilder:resource:scope=Cluster,shortName=ng,categories=sitegrid
// +kubebuilder:printcolumn:name="Units",type=integer,JSONPath=`.status.unitNumber`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="a NodeGroup name is used as a node label key, so it must be at most 63 characters"
type NodeGroup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec NodeGroupSpec `json:"spec"`
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
