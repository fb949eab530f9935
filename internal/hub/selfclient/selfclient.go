// Package selfclient builds the REST clients the hub reads and writes with
// through its own front (topology rules, its unit's members, the unit's
// health Lease). Each knows one API group version only, so the hub does not
// register, and keep in memory, every API type of the cluster (client-go's
// clientset cost 7 MiB), and asks for JSON, which the hub answers in anyway.
//
// +kubebuilder:object:generate=true
package selfclient

import (
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
)

// Core is a core/v1 client of the hub's own Node, Service and Secret
// types (types.go).
func Core(cfg *rest.Config) (rest.Interface, error) {
	return New(cfg, CoreV1, addCore)
}

// Leases is a coordination.k8s.io/v1 client.
func Leases(cfg *rest.Config) (rest.Interface, error) {
	return New(cfg, coordinationv1.SchemeGroupVersion, coordinationv1.AddToScheme)
}

// New is a client of one group version, whose types add registers.
func New(cfg *rest.Config, gv schema.GroupVersion, add func(*runtime.Scheme) error) (rest.Interface, error) {
	scheme := runtime.NewScheme()
	if err := add(scheme); err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &gv
	cfg.APIPath = "/apis"
	if gv.Group == "" {
		cfg.APIPath = "/api"
	}
	cfg.ContentType = runtime.ContentTypeJSON
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	return rest.RESTClientFor(cfg)
}

// Informer is an informer of one resource through a client of this
// package, its lists and watches narrowed by opts (nil: everything).
func Informer(c rest.Interface, resource, namespace string, obj runtime.Object, opts func(*metav1.ListOptions)) toolscache.SharedIndexInformer {
	if opts == nil {
		opts = func(*metav1.ListOptions) {}
	}
	lw := toolscache.NewFilteredListWatchFromClient(c, resource, namespace, opts)
	return toolscache.NewSharedIndexInformer(lw, obj, 0, toolscache.Indexers{})
}

// LocalNode is an informer of the hub's own Node, for the service topology
// rules and the health member both: one watch, one copy.
func LocalNode(core rest.Interface, node string) toolscache.SharedIndexInformer {
	inf := Informer(core, "nodes", "", &Node{}, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", node).String()
	})
	_ = inf.SetTransform(func(o any) (any, error) {
		if n, ok := o.(*Node); ok {
			n.ManagedFields = nil
		}
		return o, nil
	})
	return inf
}
