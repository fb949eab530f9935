package controlplane

import (
	"context"
	"fmt"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// Node is a simulated node: kwok acts as its kubelet.
type Node struct {
	Name   string
	Labels map[string]string
	// InternalIP is the node's address; kube-proxy and the endpoint
	// controllers read it.
	InternalIP string
	// OwnKubelet leaves the node to a kwok of its own (StartNodeKwok)
	// instead of the shared one.
	OwnKubelet bool
	// Annotations are added to the node's.
	Annotations map[string]string
}

// Validate says what is wrong with n, if anything.
func (n Node) Validate() error {
	if errs := validation.IsDNS1123Subdomain(n.Name); len(errs) > 0 {
		return fmt.Errorf("node name %q: %v", n.Name, errs)
	}
	for k, v := range n.Labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("label key %q: %v", k, errs)
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("label %s=%q: %v", k, v, errs)
		}
	}
	if ip := net.ParseIP(n.InternalIP); ip == nil || ip.To4() == nil {
		return fmt.Errorf("node %s: InternalIP %q is not an IPv4 address", n.Name, n.InternalIP)
	}
	return nil
}

// CreateNode registers n the way a kubelet would: a Node object with
// capacity and addresses, marked for kwok to keep Ready.
func CreateNode(ctx context.Context, cs kubernetes.Interface, n Node) error {
	if err := n.Validate(); err != nil {
		return err
	}
	labels := map[string]string{
		corev1.LabelHostname:   n.Name,
		corev1.LabelOSStable:   "linux",
		corev1.LabelArchStable: "amd64",
		"type":                 "kwok",
	}
	for k, v := range n.Labels {
		labels[k] = v
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        n.Name,
			Labels:      labels,
			Annotations: map[string]string{KwokNodeAnnotation: kwokShared, "node.alpha.kubernetes.io/ttl": "0"},
		},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: n.InternalIP},
				{Type: corev1.NodeHostName, Address: n.Name},
			},
			NodeInfo: corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64", KubeletVersion: "kwok"},
		},
	}
	for k, v := range n.Annotations {
		node.Annotations[k] = v
	}
	if n.OwnKubelet {
		node.Annotations[KwokNodeAnnotation] = kwokOwn
	}
	created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("node %s already exists", n.Name)
	}
	if err != nil {
		return fmt.Errorf("create node %s: %w", n.Name, err)
	}
	if len(created.Status.Addresses) == 0 {
		created.Status = node.Status
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("set status of node %s: %w", n.Name, err)
		}
	}
	return nil
}

// DeleteNode removes a simulated node; its pods are garbage collected.
func DeleteNode(ctx context.Context, cs kubernetes.Interface, name string) error {
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("node %s not found", name)
	}
	if err != nil {
		return err
	}
	if _, simulated := node.Annotations[KwokNodeAnnotation]; !simulated {
		return fmt.Errorf("node %s is not a simulated node; refusing to delete it", name)
	}
	return cs.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
}

// NodeReady reports whether a node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// WaitNodesReady waits until every named node is Ready.
func WaitNodesReady(ctx context.Context, cs kubernetes.Interface, timeout time.Duration, names ...string) error {
	var notReady []string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		notReady = notReady[:0]
		for _, name := range names {
			n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil || !NodeReady(n) {
				notReady = append(notReady, name)
			}
		}
		return len(notReady) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("nodes not Ready: %v: %w", notReady, err)
	}
	return nil
}
