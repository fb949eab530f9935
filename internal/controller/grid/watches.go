package grid

import (
	"context"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// Field indexes of the grid kinds in the manager's cache.
const (
	// gridKeyIndex indexes grids by spec.gridUniqKey, so a node event finds
	// the grids of the label keys it changed without listing every grid.
	gridKeyIndex = "spec.gridUniqKey"
	// unitSelectorIndex is "true" for grids with a unitSelector override,
	// the grids that NodeUnit label changes concern.
	unitSelectorIndex = "spec.overrides.unitSelector"
)

// setup registers a grid controller: it reconciles on grid changes, child
// changes, changes of node labels of the grid's key, and NodeUnit label
// changes (for unitSelector overrides).
func (r *workloadGridReconciler[G, C, S]) setup(mgr ctrl.Manager, name string) error {
	indexer := mgr.GetFieldIndexer()
	if err := indexer.IndexField(context.Background(), r.k.newGrid(), gridKeyIndex, r.indexKey); err != nil {
		return err
	}
	if err := indexer.IndexField(context.Background(), r.k.newGrid(), unitSelectorIndex, r.indexUnitSelector); err != nil {
		return err
	}
	c := mgr.GetClient()
	nodeHandler := handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueueOfRequests) {
			addAll(q, r.gridsForNodeLabels(ctx, c, nil, e.Object.GetLabels()))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueueOfRequests) {
			addAll(q, r.gridsForNodeLabels(ctx, c, e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()))
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueueOfRequests) {
			addAll(q, r.gridsForNodeLabels(ctx, c, e.Object.GetLabels(), nil))
		},
	}
	unitHandler := handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueueOfRequests) {
			addAll(q, r.gridsMatching(ctx, c, client.MatchingFields{unitSelectorIndex: "true"}))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueueOfRequests) {
			if !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) {
				addAll(q, r.gridsMatching(ctx, c, client.MatchingFields{unitSelectorIndex: "true"}))
			}
		},
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(name).
		For(r.k.newGrid(), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(r.k.newChild()).
		Watches(&corev1.Node{}, nodeHandler).
		Watches(&sitev1.NodeUnit{}, unitHandler).
		WithOptions(controller.Options{MaxConcurrentReconciles: 8}).
		Complete(r)
}

// indexKey is a grid's entry in gridKeyIndex.
func (r *workloadGridReconciler[G, C, S]) indexKey(o client.Object) []string {
	return []string{r.k.spec(o.(G)).uniqKey}
}

// indexUnitSelector is a grid's entry in unitSelectorIndex.
func (r *workloadGridReconciler[G, C, S]) indexUnitSelector(o client.Object) []string {
	if needsUnitLabels(r.k.spec(o.(G)).overrides) {
		return []string{"true"}
	}
	return nil
}

// gridsForNodeLabels are the grids whose key is among the label keys a
// node event added, removed or changed (old is nil for a new node, cur for
// a deleted one). An event that changes no label, such as a status
// heartbeat, concerns no grid.
func (r *workloadGridReconciler[G, C, S]) gridsForNodeLabels(ctx context.Context, c client.Reader, old, cur map[string]string) []reconcile.Request {
	var out []reconcile.Request
	for _, key := range changedKeys(old, cur) {
		out = append(out, r.gridsMatching(ctx, c, client.MatchingFields{gridKeyIndex: key})...)
	}
	return out
}

// gridsMatching lists the grids an index selects, as requests.
func (r *workloadGridReconciler[G, C, S]) gridsMatching(ctx context.Context, c client.Reader, fields client.MatchingFields) []reconcile.Request {
	grids, err := r.k.listGrids(ctx, c, fields)
	if err != nil {
		log.FromContext(ctx).Error(err, "list grids", "fields", fields)
		return nil
	}
	out := make([]reconcile.Request, 0, len(grids))
	for _, g := range grids {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: g.GetNamespace(), Name: g.GetName()}})
	}
	return out
}

// workqueueOfRequests is the queue event handlers add requests to.
type workqueueOfRequests = workqueue.TypedRateLimitingInterface[reconcile.Request]

func addAll(q workqueueOfRequests, reqs []reconcile.Request) {
	for _, req := range reqs {
		q.Add(req)
	}
}

// changedKeys are the label keys added, removed or changed, sorted.
func changedKeys(old, cur map[string]string) []string {
	keys := map[string]bool{}
	for k, v := range old {
		if w, ok := cur[k]; !ok || w != v {
			keys[k] = true
		}
	}
	for k := range cur {
		if _, ok := old[k]; !ok {
			keys[k] = true
		}
	}
	return slices.Sorted(maps.Keys(keys))
}
