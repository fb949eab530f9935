package v1alpha1

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/conversion"
	"sigs.k8s.io/randfill"

	"github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

var equateEmpty = cmpopts.EquateEmpty()

// demoUnit is SuperEdge's pkg/site-manager/crd/demo/nodeunit_demo.yaml.
func demoUnit() *NodeUnit {
	return &NodeUnit{
		ObjectMeta: metav1.ObjectMeta{Name: "nodeunit-demo"},
		Spec: NodeUnitSpec{
			Type: "edge", Nodes: []string{"nodename"},
			Selector: &v1alpha2.Selector{MatchLabels: map[string]string{"kubernetes.io/hostname": "nodename"}},
			SetNode:  SetNode{Labels: map[string]string{"nodeunit": "demo"}},
		},
	}
}

func TestNodeUnitToHub(t *testing.T) {
	added := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	cases := []struct {
		name string
		in   *NodeUnit
		want *v1alpha2.NodeUnit
	}{
		{"SuperEdge's demo", demoUnit(), &v1alpha2.NodeUnit{
			ObjectMeta: metav1.ObjectMeta{Name: "nodeunit-demo"},
			Spec: v1alpha2.NodeUnitSpec{
				Type: "edge", Nodes: []string{"nodename"},
				Selector: &v1alpha2.Selector{MatchLabels: map[string]string{"kubernetes.io/hostname": "nodename"}},
				SetNode:  v1alpha2.SetNode{Labels: map[string]string{"nodeunit": "demo"}},
			},
		}},
		{"every field", &NodeUnit{
			ObjectMeta: metav1.ObjectMeta{Name: "u", Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"c": "d"}},
			Spec: NodeUnitSpec{
				Type: "cloud", Unschedulable: true, Nodes: []string{"n1", "n2"},
				Selector: &v1alpha2.Selector{
					MatchLabels:      map[string]string{"zone": "a"},
					MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: metav1.LabelSelectorOpExists}},
					Annotations:      map[string]string{"rack": "1"},
				},
				SetNode: SetNode{
					Labels: map[string]string{"l": "v"}, Annotations: map[string]string{"an": "av"},
					Taints: []corev1.Taint{{Key: "t", Value: "v", Effect: corev1.TaintEffectNoSchedule}},
				},
			},
			Status: NodeUnitStatus{ReadyRate: "1/2", ReadyNodes: []string{"n1"}, NotReadyNodes: []string{"n2"}},
		}, &v1alpha2.NodeUnit{
			ObjectMeta: metav1.ObjectMeta{Name: "u", Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"c": "d"}},
			Spec: v1alpha2.NodeUnitSpec{
				Type: "cloud", Unschedulable: true, Nodes: []string{"n1", "n2"},
				Selector: &v1alpha2.Selector{
					MatchLabels:      map[string]string{"zone": "a"},
					MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: metav1.LabelSelectorOpExists}},
					Annotations:      map[string]string{"rack": "1"},
				},
				SetNode: v1alpha2.SetNode{
					Labels: map[string]string{"l": "v"}, Annotations: map[string]string{"an": "av"},
					Taints: []v1alpha2.Taint{{Key: "t", Value: "v", Effect: corev1.TaintEffectNoSchedule}},
				},
			},
			Status: v1alpha2.NodeUnitStatus{ReadyRate: "1/2", ReadyNodes: []string{"n1"}, NotReadyNodes: []string{"n2"}},
		}},
		{"unit taints and timeAdded go into the annotation", &NodeUnit{
			ObjectMeta: metav1.ObjectMeta{Name: "u"},
			Spec: NodeUnitSpec{
				Nodes:   []string{"n1"},
				Taints:  []corev1.Taint{{Key: "unit", Effect: corev1.TaintEffectNoSchedule}},
				SetNode: SetNode{Taints: []corev1.Taint{{Key: "t", Effect: corev1.TaintEffectNoExecute, TimeAdded: &added}}},
			},
		}, &v1alpha2.NodeUnit{
			ObjectMeta: metav1.ObjectMeta{Name: "u", Annotations: map[string]string{AnnotationV1alpha1Fields: `{"taints":[{"key":"unit","effect":"NoSchedule"}],"setnodeTaints":[{"key":"t","effect":"NoExecute","timeAdded":"2026-01-02T03:04:05Z"}]}`}},
			Spec: v1alpha2.NodeUnitSpec{
				Nodes:   []string{"n1"},
				SetNode: v1alpha2.SetNode{Taints: []v1alpha2.Taint{{Key: "t", Effect: corev1.TaintEffectNoExecute}}},
			},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := &v1alpha2.NodeUnit{}
			if err := tc.in.ConvertTo(got); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, equateEmpty); d != "" {
				t.Errorf("v1alpha2 (-want +got):\n%s", d)
			}
			back := &NodeUnit{}
			if err := back.ConvertFrom(got); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.in, back, equateEmpty); d != "" {
				t.Errorf("round trip changed the object (-before +after):\n%s", d)
			}
		})
	}
}

func TestNodeUnitFromHub(t *testing.T) {
	cond := metav1.Condition{Type: v1alpha2.UnitReady, Status: metav1.ConditionTrue, Reason: v1alpha2.ReasonAllNodesReady, Message: "all 1 nodes Ready",
		LastTransitionTime: metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), ObservedGeneration: 3}
	hub := &v1alpha2.NodeUnit{
		ObjectMeta: metav1.ObjectMeta{Name: "u", Generation: 3},
		Spec:       v1alpha2.NodeUnitSpec{Type: "edge", Nodes: []string{"n1"}},
		Status:     v1alpha2.NodeUnitStatus{ReadyRate: "1/1", ReadyNodes: []string{"n1"}, ObservedGeneration: 3, Conditions: []metav1.Condition{cond}},
	}
	got := &NodeUnit{}
	if err := got.ConvertFrom(hub); err != nil {
		t.Fatal(err)
	}
	want := &NodeUnit{
		ObjectMeta: metav1.ObjectMeta{Name: "u", Generation: 3, Annotations: map[string]string{AnnotationV1alpha2Fields: `{"observedGeneration":3,"conditions":[{"type":"Ready","status":"True","observedGeneration":3,"lastTransitionTime":"2026-01-02T03:04:05Z","reason":"AllNodesReady","message":"all 1 nodes Ready"}]}`}},
		Spec:       NodeUnitSpec{Type: "edge", Nodes: []string{"n1"}},
		Status:     NodeUnitStatus{ReadyRate: "1/1", ReadyNodes: []string{"n1"}},
	}
	if d := cmp.Diff(want, got, equateEmpty); d != "" {
		t.Errorf("v1alpha1 (-want +got):\n%s", d)
	}
	back := &v1alpha2.NodeUnit{}
	if err := got.ConvertTo(back); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(hub, back, equateEmpty); d != "" {
		t.Errorf("round trip changed the object (-before +after):\n%s", d)
	}
}

// TestKeptTimeAddedYieldsToNewTaints: a v1alpha2 client that changes the
// setNode taints wins over the timeAdded kept from v1alpha1.
func TestKeptTimeAddedYieldsToNewTaints(t *testing.T) {
	hub := &v1alpha2.NodeUnit{
		ObjectMeta: metav1.ObjectMeta{Name: "u", Annotations: map[string]string{AnnotationV1alpha1Fields: `{"setnodeTaints":[{"key":"old","effect":"NoExecute","timeAdded":"2026-01-02T03:04:05Z"}]}`}},
		Spec:       v1alpha2.NodeUnitSpec{Nodes: []string{"n1"}, SetNode: v1alpha2.SetNode{Taints: []v1alpha2.Taint{{Key: "new", Effect: corev1.TaintEffectNoSchedule}}}},
	}
	got := &NodeUnit{}
	if err := got.ConvertFrom(hub); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]corev1.Taint{{Key: "new", Effect: corev1.TaintEffectNoSchedule}}, got.Spec.SetNode.Taints); d != "" {
		t.Errorf("setnode taints (-want +got):\n%s", d)
	}
}

func TestNodeGroupConversion(t *testing.T) {
	// SuperEdge's pkg/site-manager/crd/demo/nodegroup_demo.yaml, with a status.
	in := &NodeGroup{
		ObjectMeta: metav1.ObjectMeta{Name: "nodegroup-demo"},
		Spec: NodeGroupSpec{
			NodeUnits: []string{"unit-node-edge"},
			Selector:  &v1alpha2.Selector{MatchLabels: map[string]string{"nodeunit": "demo"}},
			Workload:  []Workload{{Name: "demo", Type: "Deployment"}},
		},
		Status: NodeGroupStatus{UnitNumber: 2, NodeUnits: []string{"nodeunit-demo", "unit-node-edge"},
			WorkloadStatus: []WorkloadStatus{{WorkloadName: "demo", ReadyUnit: []string{"unit-node-edge"}}}},
	}
	want := &v1alpha2.NodeGroup{
		ObjectMeta: metav1.ObjectMeta{Name: "nodegroup-demo", Annotations: map[string]string{AnnotationV1alpha1Fields: `{"workload":[{"name":"demo","type":"Deployment"}],"workloadstatus":[{"workloadname":"demo","readyunit":["unit-node-edge"]}]}`}},
		Spec: v1alpha2.NodeGroupSpec{
			NodeUnits: []string{"unit-node-edge"},
			Selector:  &v1alpha2.Selector{MatchLabels: map[string]string{"nodeunit": "demo"}},
		},
		Status: v1alpha2.NodeGroupStatus{UnitNumber: 2, NodeUnits: []string{"nodeunit-demo", "unit-node-edge"}},
	}
	got := &v1alpha2.NodeGroup{}
	if err := in.ConvertTo(got); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, equateEmpty); d != "" {
		t.Errorf("v1alpha2 (-want +got):\n%s", d)
	}
	back := &NodeGroup{}
	if err := back.ConvertFrom(got); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, back, equateEmpty); d != "" {
		t.Errorf("round trip changed the object (-before +after):\n%s", d)
	}
	auto := &v1alpha2.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: "zones"}, Spec: v1alpha2.NodeGroupSpec{AutoFindNodeKeys: []string{"zone"}}}
	old := &NodeGroup{}
	if err := old.ConvertFrom(auto); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"zone"}, old.Spec.AutoFindNodeKeys); d != "" {
		t.Errorf("autofindnodekeys (-want +got):\n%s", d)
	}
}

func TestBadKeptFieldsAreAnError(t *testing.T) {
	hub := &v1alpha2.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "u", Annotations: map[string]string{AnnotationV1alpha1Fields: "{not json"}}}
	err := (&NodeUnit{}).ConvertFrom(hub)
	if err == nil || !strings.Contains(err.Error(), AnnotationV1alpha1Fields) {
		t.Errorf("ConvertFrom with a broken annotation: %v, want an error naming it", err)
	}
}

// TestRoundTripFuzz converts random objects both ways: what comes back is
// what went in.
func TestRoundTripFuzz(t *testing.T) {
	f := randfill.NewWithSeed(1).NilChance(0.3).NumElements(0, 3).Funcs(
		// The webhook sets apiVersion and kind.
		func(*metav1.TypeMeta, randfill.Continue) {},
		func(m *metav1.ObjectMeta, c randfill.Continue) {
			m.Name = c.String(10)
			c.Fill(&m.Labels)
			c.Fill(&m.Annotations)
			m.Generation = c.Int63()
		},
		// JSON keeps times to the second.
		func(tm *metav1.Time, c randfill.Continue) { *tm = metav1.Unix(c.Int63n(1<<32), 0).Rfc3339Copy() },
		func(tm **metav1.Time, c randfill.Continue) {
			if c.Bool() {
				v := metav1.Unix(c.Int63n(1<<32), 0).Rfc3339Copy()
				*tm = &v
			}
		},
	)
	for i := 0; i < 500; i++ {
		fromSpoke(t, f, &NodeUnit{}, &v1alpha2.NodeUnit{}, &NodeUnit{})
		fromSpoke(t, f, &NodeGroup{}, &v1alpha2.NodeGroup{}, &NodeGroup{})
		fromHub(t, f, &v1alpha2.NodeUnit{}, &NodeUnit{}, &v1alpha2.NodeUnit{})
		fromHub(t, f, &v1alpha2.NodeGroup{}, &NodeGroup{}, &v1alpha2.NodeGroup{})
	}
}

// fromSpoke fills in randomly, converts it to hub and back into back, and
// fails unless back equals in.
func fromSpoke(t *testing.T, f *randfill.Filler, in conversion.Convertible, hub conversion.Hub, back conversion.Convertible) {
	t.Helper()
	f.Fill(in)
	if err := in.ConvertTo(hub); err != nil {
		t.Fatal(err)
	}
	if err := back.ConvertFrom(hub); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, back, equateEmpty); d != "" {
		t.Fatalf("%T round trip (-before +after):\n%s", in, d)
	}
}

// fromHub is fromSpoke the other way: hub to spoke and back.
func fromHub(t *testing.T, f *randfill.Filler, in conversion.Hub, spoke conversion.Convertible, back conversion.Hub) {
	t.Helper()
	f.Fill(in)
	if err := spoke.ConvertFrom(in); err != nil {
		t.Fatal(err)
	}
	if err := spoke.ConvertTo(back); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, back, equateEmpty); d != "" {
		t.Fatalf("%T round trip (-before +after):\n%s", in, d)
	}
}
