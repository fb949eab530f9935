// Package v1alpha1 holds the site.superedge.io/v1alpha1 API, the version
// SuperEdge's own demos and docs use (lower-case fields: setnode,
// nodeunits, readyrate). It is served beside v1alpha2, which is stored:
// every v1alpha1 object is converted to v1alpha2 by sitegrid-manager's
// conversion webhook and back. What v1alpha2 has no field for is kept in
// an annotation, so a round trip returns the object unchanged.
// +kubebuilder:object:generate=true
// +groupName=site.superedge.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "site.superedge.io", Version: "v1alpha1"}
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
