// Package v1alpha2 holds the site.superedge.io/v1alpha2 API: NodeUnit (the
// nodes of one edge site) and NodeGroup (a set of units sharing one label
// key). It reads and writes SuperEdge's manifests of the same group and
// version.
// +kubebuilder:object:generate=true
// +groupName=site.superedge.io
package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "site.superedge.io", Version: "v1alpha2"}

	// SchemeBuilder registers the types of this API.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &NodeUnit{}, &NodeUnitList{}, &NodeGroup{}, &NodeGroupList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
