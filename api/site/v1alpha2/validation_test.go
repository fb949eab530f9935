package v1alpha2_test

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestValidation sends good and bad objects to a real apiserver with the
// generated CRDs: bad ones are refused with a message that names the problem.
func TestValidation(t *testing.T) {
	cfg := testenv.StartEnvtest(t)
	scheme := runtime.NewScheme()
	if err := sitev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	unit := func(name string, spec sitev1.NodeUnitSpec) client.Object {
		return &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	}
	grp := func(name string, spec sitev1.NodeGroupSpec) client.Object {
		return &sitev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	}
	byName := sitev1.NodeUnitSpec{Nodes: []string{"n1"}}
	cases := []struct {
		name    string
		obj     client.Object
		wantErr string // empty: accepted
	}{
		{"unit by node names", unit("ok-nodes", byName), ""},
		{"unit by selector", unit("ok-selector", sitev1.NodeUnitSpec{Selector: &sitev1.Selector{MatchLabels: map[string]string{"zone": "a"}}}), ""},
		{"unit without nodes or selector", unit("no-members", sitev1.NodeUnitSpec{}), "needs spec.nodes (node names) or spec.selector"},
		{"unit with a bad type", unit("bad-type", sitev1.NodeUnitSpec{Type: "fog", Nodes: []string{"n1"}}), `Unsupported value: "fog"`},
		{"unit with a bad node name", unit("bad-node", sitev1.NodeUnitSpec{Nodes: []string{"Node_1"}}), "spec.nodes[0]"},
		{"unit name too long for a label value", unit(strings.Repeat("u", 64), byName), "at most 63 characters"},
		{"setNode label key invalid", unit("bad-key", sitev1.NodeUnitSpec{Nodes: []string{"n1"}, SetNode: sitev1.SetNode{Labels: map[string]string{"bad key!": "x"}}}), "setNode.labels keys must be valid label keys"},
		{"setNode label value too long", unit("bad-value", sitev1.NodeUnitSpec{Nodes: []string{"n1"}, SetNode: sitev1.SetNode{Labels: map[string]string{"good": strings.Repeat("v", 64)}}}), "setNode.labels values must be valid label values"},
		{"taint with a bad effect", unit("bad-effect", sitev1.NodeUnitSpec{Nodes: []string{"n1"}, SetNode: sitev1.SetNode{Taints: []sitev1.Taint{{Key: "k", Effect: "NoWay"}}}}), `Unsupported value: "NoWay"`},
		{"taint with a bad key", unit("bad-taint-key", sitev1.NodeUnitSpec{Nodes: []string{"n1"}, SetNode: sitev1.SetNode{Taints: []sitev1.Taint{{Key: "a b", Effect: corev1.TaintEffectNoSchedule}}}}), "spec.setNode.taints[0].key"},
		{"selector with a bad operator", unit("bad-op", sitev1.NodeUnitSpec{Selector: &sitev1.Selector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Near"}}}}), "operator must be In, NotIn, Exists or DoesNotExist"},
		{"selector In without values", unit("no-values", sitev1.NodeUnitSpec{Selector: &sitev1.Selector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: metav1.LabelSelectorOpIn}}}}), "need values"},
		{"group by autoFindNodeKeys", grp("zones", sitev1.NodeGroupSpec{AutoFindNodeKeys: []string{"topology.kubernetes.io/zone"}}), ""},
		{"group with nothing", grp("empty", sitev1.NodeGroupSpec{}), "needs spec.nodeUnits, spec.selector or spec.autoFindNodeKeys"},
		{"group with a bad autoFindNodeKeys key", grp("bad-auto", sitev1.NodeGroupSpec{AutoFindNodeKeys: []string{"not a key"}}), "spec.autoFindNodeKeys[0]"},
		{"group name too long for a label key", grp(strings.Repeat("g", 64), sitev1.NodeGroupSpec{NodeUnits: []string{"u"}}), "at most 63 characters"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Create(context.Background(), tc.obj)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
	got := &sitev1.NodeUnit{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "ok-nodes"}, got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Type != sitev1.EdgeNodeUnit {
		t.Errorf("type defaulted to %q, want edge", got.Spec.Type)
	}
}
