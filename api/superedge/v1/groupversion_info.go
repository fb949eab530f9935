// Package v1 holds the superedge.io/v1 API: DeploymentGrid, StatefulSetGrid
// and ServiceGrid, which stamp one copy of a group of services into every
// edge unit. It reads SuperEdge's manifests of the same group and version
// unchanged, and adds per-unit overrides and staged rollouts across units.
// +kubebuilder:object:generate=true
// +groupName=superedge.io
package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "superedge.io", Version: "v1"}

	// SchemeBuilder registers the types of this API.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&DeploymentGrid{}, &DeploymentGridList{},
		&StatefulSetGrid{}, &StatefulSetGridList{},
		&ServiceGrid{}, &ServiceGridList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
