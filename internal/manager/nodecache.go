package manager

import (
	corev1 "k8s.io/api/core/v1"
)

// stripNode is the cache's transform for Nodes. It keeps what the
// controllers read: the metadata (labels, annotations, the managed fields of
// the main resource, which server-side apply extraction reads), the spec
// (taints, cordon) and the status conditions and addresses (readiness; the
// names a hub's serving certificate may carry). It drops the rest of the
// status, above all the image list, which is most of a real node's size,
// and the managed fields of the status subresource, which sitegrid never
// writes. Nothing writes a cached Node back (nodes are changed by
// server-side apply of sitegrid's own fields only), so what is dropped is
// never lost.
func stripNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	n.Status = corev1.NodeStatus{Conditions: n.Status.Conditions, Addresses: n.Status.Addresses}
	kept := n.ManagedFields[:0]
	for _, m := range n.ManagedFields {
		if m.Subresource == "" {
			kept = append(kept, m)
		}
	}
	clear(n.ManagedFields[len(kept):])
	n.ManagedFields = kept
	return n, nil
}
