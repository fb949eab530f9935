package selfclient

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The hub reads a few core/v1 kinds, and of them only a few fields: it
// decodes them into these types instead of k8s.io/api/core/v1's, which
// would link every core type's code into the hub (2.5 MiB of its resident
// memory, docs/hub.md). JSON decoding drops the fields not named here.

// CoreV1 is the core API group version.
var CoreV1 = schema.GroupVersion{Version: "v1"}

// Node is what the hub reads of a Node: its metadata and addresses.
// +kubebuilder:object:root=true
type Node struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Status            NodeStatus `json:"status,omitempty"`
}

// NodeStatus holds a Node's addresses.
type NodeStatus struct {
	Addresses []NodeAddress `json:"addresses,omitempty"`
}

// NodeAddress is one of a Node's addresses.
type NodeAddress struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

// NodeInternalIP is the address type peers reach a node at.
const NodeInternalIP = "InternalIP"

// NodeList is a list of Nodes.
// +kubebuilder:object:root=true
type NodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Node `json:"items"`
}

// Service is what the hub reads of a Service: its metadata.
// +kubebuilder:object:root=true
type Service struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
}

// ServiceList is a list of Services.
// +kubebuilder:object:root=true
type ServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Service `json:"items"`
}

// Secret is what the hub reads of a Secret: its metadata and data.
// +kubebuilder:object:root=true
type Secret struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Data              map[string][]byte `json:"data,omitempty"`
}

// SecretList is a list of Secrets.
// +kubebuilder:object:root=true
type SecretList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Secret `json:"items"`
}

// addCore registers the types, and the list and watch options, under
// core/v1.
func addCore(s *runtime.Scheme) error {
	s.AddKnownTypes(CoreV1, &Node{}, &NodeList{}, &Service{}, &ServiceList{}, &Secret{}, &SecretList{})
	metav1.AddToGroupVersion(s, CoreV1)
	return nil
}
