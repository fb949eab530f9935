package unitnames

import (
	"fmt"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// Index knows, for the node, which child StatefulSet of each
// StatefulSetGrid serves its unit.
type Index struct {
	sets, node toolscache.SharedIndexInformer
	stop       chan struct{}
	once       sync.Once
}

const byGrid = "grid"

// NewIndex watches the node's own Node and the grids' child StatefulSets.
func NewIndex(client kubernetes.Interface, node string) (*Index, error) {
	children := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = gridv1.LabelGridSelector
	}))
	self := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", node).String()
	}))
	ix := &Index{sets: children.Apps().V1().StatefulSets().Informer(), node: self.Core().V1().Nodes().Informer(), stop: make(chan struct{})}
	if err := ix.sets.AddIndexers(toolscache.Indexers{byGrid: func(obj any) ([]string, error) {
		s, ok := obj.(*appsv1.StatefulSet)
		if !ok {
			return nil, nil
		}
		return []string{gridKey(s.Namespace, s.Spec.ServiceName, s.Labels[gridv1.LabelGridSelector])}, nil
	}}); err != nil {
		return nil, err
	}
	return ix, nil
}

func gridKey(namespace, service, grid string) string {
	return fmt.Sprintf("%s/%s/%s", namespace, service, grid)
}

// Start runs the watches until Stop.
func (ix *Index) Start() {
	go ix.sets.Run(ix.stop)
	go ix.node.Run(ix.stop)
}

// Stop ends the watches.
func (ix *Index) Stop() { ix.once.Do(func() { close(ix.stop) }) }

// Synced says whether both watches have listed.
func (ix *Index) Synced() bool { return ix.sets.HasSynced() && ix.node.HasSynced() }

// Child is the StatefulSet of grid (serving service in namespace) for the
// node's unit: the child whose unit value is the node's value of the
// grid's gridUniqKey.
func (ix *Index) Child(namespace, service, grid string) (string, bool) {
	nodes := ix.node.GetStore().List()
	if len(nodes) != 1 {
		return "", false
	}
	labels := nodes[0].(*corev1.Node).Labels
	sets, err := ix.sets.GetIndexer().ByIndex(byGrid, gridKey(namespace, service, grid))
	if err != nil {
		return "", false
	}
	for _, obj := range sets {
		s := obj.(*appsv1.StatefulSet)
		if v, ok := labels[s.Labels[gridv1.LabelGridUniqKey]]; ok && v == s.Labels[gridv1.LabelGridUnit] {
			return s.Name, true
		}
	}
	return "", false
}
