package grid

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// TestGridsForNodeLabels: a node event reaches the grids of the label keys
// it changed, found by the key index, and no grid when it changed no label
// (a status heartbeat).
func TestGridsForNodeLabels(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := gridv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	r := NewDeploymentGridReconciler(nil, nil, nil, nil, 0)
	grid := func(name, key string) client.Object {
		return &gridv1.DeploymentGrid{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: gridv1.DeploymentGridSpec{GridUniqKey: key}}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(grid("by-zone", "zone"), grid("by-zone-too", "zone"), grid("by-site", "sitegrid.io/site"), grid("by-rack", "rack")).
		WithIndex(&gridv1.DeploymentGrid{}, gridKeyIndex, r.indexKey).Build()
	req := func(name string) reconcile.Request {
		return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "default", Name: name}}
	}
	labels := map[string]string{"zone": "a", "sitegrid.io/site": "s1", "kubernetes.io/os": "linux"}
	for _, tc := range []struct {
		name     string
		old, cur map[string]string
		want     []reconcile.Request
	}{
		{name: "status heartbeat: no label changed", old: labels, cur: labels},
		{name: "new node", cur: labels, want: []reconcile.Request{req("by-site"), req("by-zone"), req("by-zone-too")}},
		{name: "deleted node", old: labels, want: []reconcile.Request{req("by-site"), req("by-zone"), req("by-zone-too")}},
		{name: "one key changed", old: labels, cur: map[string]string{"zone": "b", "sitegrid.io/site": "s1", "kubernetes.io/os": "linux"},
			want: []reconcile.Request{req("by-zone"), req("by-zone-too")}},
		{name: "a key no grid uses", old: labels, cur: map[string]string{"zone": "a", "sitegrid.io/site": "s1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := r.gridsForNodeLabels(context.Background(), c, tc.old, tc.cur)
			sortReqs := cmpopts.SortSlices(func(a, b reconcile.Request) bool { return a.Name < b.Name })
			if diff := cmp.Diff(tc.want, got, sortReqs, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
