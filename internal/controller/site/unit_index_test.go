package site

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// TestUnitsOfNodeFindsWhatAScanFinds: through UnitCandidateIndex, the units
// of a node are exactly those a scan of every unit with UnitHasNode finds,
// for units by matchLabels, by expressions, by annotations, by name, by
// several of these, and with empty selectors.
func TestUnitsOfNodeFindsWhatAScanFinds(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := sitev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(n int) string { return fmt.Sprint(rng.IntN(n)) }
	var units []client.Object
	for i := range 300 {
		u := &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("unit-%d", i)}}
		switch i % 6 {
		case 0:
			u.Spec.Selector = &sitev1.Selector{MatchLabels: map[string]string{"site": pick(20)}}
		case 1:
			u.Spec.Selector = &sitev1.Selector{MatchLabels: map[string]string{"site": pick(20), "zone": pick(3)}}
		case 2:
			u.Spec.Selector = &sitev1.Selector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpIn, Values: []string{pick(3)}}}}
		case 3:
			u.Spec.Selector = &sitev1.Selector{Annotations: map[string]string{"rack": pick(5)}}
		case 4:
			u.Spec.Nodes = []string{"node-" + pick(100), "node-" + pick(100)}
			u.Spec.Selector = &sitev1.Selector{MatchLabels: map[string]string{"zone": pick(3)}}
		case 5:
			u.Spec.Selector = &sitev1.Selector{} // selects nothing
		}
		units = append(units, u)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(units...).
		WithIndex(&sitev1.NodeUnit{}, UnitCandidateIndex, func(o client.Object) []string { return unitCandidateKeys(o.(*sitev1.NodeUnit)) }).
		Build()
	for i := range 100 {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i),
			Labels:      map[string]string{"site": pick(20), "zone": pick(3), "other": "x"},
			Annotations: map[string]string{"rack": pick(5)}}}
		got, err := unitsOfNode(context.Background(), c, node)
		if err != nil {
			t.Fatal(err)
		}
		var want, names []string
		for _, o := range units {
			if u := o.(*sitev1.NodeUnit); sitev1.UnitHasNode(u, node) {
				want = append(want, u.Name)
			}
		}
		for _, u := range got {
			names = append(names, u.Name)
		}
		slices.Sort(want)
		if !slices.Equal(names, want) {
			t.Fatalf("units of %s (labels %v): got %v, want %v", node.Name, node.Labels, names, want)
		}
	}
}

// TestNodeEventsEnqueueOnlyWhatTheyConcern: sitegrid's own labelling of a
// node (its group label, its units annotation) enqueues no group and no
// unit; moving it to another site enqueues the group (its automatic units)
// and exactly the two units it left and joined.
func TestNodeEventsEnqueueOnlyWhatTheyConcern(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := sitev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	group := &sitev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: "sites"}, Spec: sitev1.NodeGroupSpec{AutoFindNodeKeys: []string{"site"}}}
	var objs []client.Object = []client.Object{group}
	for _, site := range []string{"a", "b", "c"} {
		objs = append(objs, &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "sites-" + site, Labels: map[string]string{sitev1.AutoGroupLabel: "sites"}},
			Spec: sitev1.NodeUnitSpec{Selector: &sitev1.Selector{MatchLabels: map[string]string{"site": site}}}})
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithIndex(&sitev1.NodeUnit{}, UnitCandidateIndex, func(o client.Object) []string { return unitCandidateKeys(o.(*sitev1.NodeUnit)) }).
		Build()
	node := func(labels map[string]string, annotations map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: labels, Annotations: annotations}}
	}
	queued := func(h interface {
		Update(context.Context, event.UpdateEvent, workqueueOfRequests)
	}, old, cur *corev1.Node) []string {
		q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
		defer q.ShutDown()
		h.Update(context.Background(), event.UpdateEvent{ObjectOld: old, ObjectNew: cur}, q)
		var names []string
		for q.Len() > 0 {
			r, _ := q.Get()
			names = append(names, r.Name)
			q.Done(r)
		}
		slices.Sort(names)
		return names
	}
	bare := node(map[string]string{"site": "a"}, nil)
	labelled := node(map[string]string{"site": "a", "sites": "sites-a"}, map[string]string{sitev1.AnnotationNodeUnits: `["sites-a"]`})
	moved := node(map[string]string{"site": "b", "sites": "sites-a"}, map[string]string{sitev1.AnnotationNodeUnits: `["sites-a"]`})
	units := unitWatch(c)
	for _, tc := range []struct {
		name              string
		old, cur          *corev1.Node
		groups, unitNames []string
	}{
		{"sitegrid labels it", bare, labelled, nil, nil},
		{"moved to another site", labelled, moved, []string{"sites"}, []string{"sites-a", "sites-b"}},
	} {
		if got := queued(groupsForNode(c), tc.old, tc.cur); !slices.Equal(got, tc.groups) {
			t.Errorf("%s: groups enqueued %v, want %v", tc.name, got, tc.groups)
		}
		if got := queued(units, tc.old, tc.cur); !slices.Equal(got, tc.unitNames) {
			t.Errorf("%s: units enqueued %v, want %v", tc.name, got, tc.unitNames)
		}
	}
}
