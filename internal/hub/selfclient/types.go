package selfclient

import (
	"slices"

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
type NodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Node `json:"items"`
}

// Service is what the hub reads of a Service: its metadata.
type Service struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
}

// ServiceList is a list of Services.
type ServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Service `json:"items"`
}

// Secret is what the hub reads of a Secret: its metadata and data.
type Secret struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Data              map[string][]byte `json:"data,omitempty"`
}

// SecretList is a list of Secrets.
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

// DeepCopyObject implements runtime.Object.
func (n *Node) DeepCopyObject() runtime.Object {
	out := &Node{TypeMeta: n.TypeMeta, Status: NodeStatus{Addresses: slices.Clone(n.Status.Addresses)}}
	n.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *NodeList) DeepCopyObject() runtime.Object {
	out := &NodeList{TypeMeta: l.TypeMeta, Items: copyItems(l.Items)}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	return out
}

// DeepCopyObject implements runtime.Object.
func (s *Service) DeepCopyObject() runtime.Object {
	out := &Service{TypeMeta: s.TypeMeta}
	s.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *ServiceList) DeepCopyObject() runtime.Object {
	out := &ServiceList{TypeMeta: l.TypeMeta, Items: copyItems(l.Items)}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	return out
}

// DeepCopyObject implements runtime.Object.
func (s *Secret) DeepCopyObject() runtime.Object {
	out := &Secret{TypeMeta: s.TypeMeta}
	s.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if s.Data != nil {
		out.Data = make(map[string][]byte, len(s.Data))
		for k, v := range s.Data {
			out.Data[k] = slices.Clone(v)
		}
	}
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *SecretList) DeepCopyObject() runtime.Object {
	out := &SecretList{TypeMeta: l.TypeMeta, Items: copyItems(l.Items)}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	return out
}

// copyItems deep-copies a list's items.
func copyItems[T any, P interface {
	*T
	DeepCopyObject() runtime.Object
}](items []T) []T {
	if items == nil {
		return nil
	}
	out := make([]T, len(items))
	for i := range items {
		out[i] = *P(&items[i]).DeepCopyObject().(P)
	}
	return out
}
