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
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

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
