package v1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ServiceGridSpec describes the Service of a grid.
type ServiceGridSpec struct {
	// gridUniqKey is the node label key whose values are the units; traffic
	// to the Service stays inside the unit of the client's node.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self.indexOf('/') <= 253",message="the prefix of gridUniqKey (before the /) must be at most 253 characters, as in any label key"
	GridUniqKey string `json:"gridUniqKey"`

	// template is the spec of the Service <name>-svc.
	// +required
	Template corev1.ServiceSpec `json:"template"`
}

// ServiceGridStatus is the observed state of a ServiceGrid.
type ServiceGridStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// conditions: Conflict, Valid, Synced.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ServiceGrid yields one Service, <name>-svc, whose traffic the edge hub
// keeps inside the client's unit.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=svcg,categories=sitegrid
// +kubebuilder:printcolumn:name="Key",type=string,JSONPath=`.spec.gridUniqKey`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 59",message="a ServiceGrid's name must be a DNS label of at most 59 characters (lower case letters, digits and '-', starting with a letter): its Service is named <name>-svc"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ServiceGrid struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ServiceGridSpec `json:"spec"`
	// +optional
	Status ServiceGridStatus `json:"status,omitempty"`
}

// ServiceGridList is a list of ServiceGrids.
// +kubebuilder:object:root=true
type ServiceGridList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ServiceGrid `json:"items"`
}
