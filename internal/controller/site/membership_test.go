package site

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

func node(name string, labels map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func unit(name string, spec sitev1.NodeUnitSpec) *sitev1.NodeUnit {
	return &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func group(name string, spec sitev1.NodeGroupSpec) *sitev1.NodeGroup {
	return &sitev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func TestPickUnitKeepsCurrent(t *testing.T) {
	claims := []string{"u-a", "u-b"}
	if got := PickUnit(claims, "u-b", true); got != "u-b" {
		t.Errorf("current u-b still claimed: got %s, want u-b (no flapping)", got)
	}
	if got := PickUnit(claims, "gone", true); got != "u-a" {
		t.Errorf("current no longer claimed: got %s, want the first, u-a", got)
	}
	if got := PickUnit(claims, "", false); got != "u-a" {
		t.Errorf("no current: got %s, want u-a", got)
	}
}

func TestDesiredForNode(t *testing.T) {
	edge := node("n1", map[string]string{"zone": "a", "grp": "u-b"})
	edge.Annotations = map[string]string{"site.example.com/rack": "r1"}
	cases := []struct {
		name          string
		snap          Snapshot
		want          Desired
		wantConflicts int
	}{
		{
			name: "no unit",
			snap: Snapshot{},
			want: Desired{Labels: map[string]string{}, Annotations: map[string]string{}},
		},
		{
			name: "unit by name with setNode",
			snap: Snapshot{Units: []*sitev1.NodeUnit{unit("u1", sitev1.NodeUnitSpec{Nodes: []string{"n1"}, Unschedulable: true,
				SetNode: sitev1.SetNode{Labels: map[string]string{"tier": "edge"}, Annotations: map[string]string{"a": "1"},
					Taints: []sitev1.Taint{{Key: "edge", Effect: corev1.TaintEffectNoSchedule}}}})}},
			want: Desired{Labels: map[string]string{"tier": "edge"}, Annotations: map[string]string{"a": "1", sitev1.AnnotationNodeUnits: `["u1"]`},
				Taints: []corev1.Taint{{Key: "edge", Effect: corev1.TaintEffectNoSchedule}}, Unschedulable: true},
		},
		{
			name: "selector that does not match",
			snap: Snapshot{Units: []*sitev1.NodeUnit{unit("u1", sitev1.NodeUnitSpec{Selector: &sitev1.Selector{MatchLabels: map[string]string{"zone": "b"}},
				SetNode: sitev1.SetNode{Labels: map[string]string{"tier": "edge"}}})}},
			want: Desired{Labels: map[string]string{}, Annotations: map[string]string{}},
		},
		{
			name: "selector by annotation",
			snap: Snapshot{Units: []*sitev1.NodeUnit{
				unit("by-annotation", sitev1.NodeUnitSpec{Selector: &sitev1.Selector{Annotations: map[string]string{"site.example.com/rack": "r1"}},
					SetNode: sitev1.SetNode{Labels: map[string]string{"rack": "r1"}}}),
				unit("other-rack", sitev1.NodeUnitSpec{Selector: &sitev1.Selector{Annotations: map[string]string{"site.example.com/rack": "r2"}},
					SetNode: sitev1.SetNode{Labels: map[string]string{"rack": "r2"}}}),
			}},
			want: Desired{Labels: map[string]string{"rack": "r1"}, Annotations: map[string]string{sitev1.AnnotationNodeUnits: `["by-annotation"]`}},
		},
		{
			name: "empty selector selects nothing",
			snap: Snapshot{Units: []*sitev1.NodeUnit{unit("u1", sitev1.NodeUnitSpec{Selector: &sitev1.Selector{},
				SetNode: sitev1.SetNode{Labels: map[string]string{"tier": "edge"}}})}},
			want: Desired{Labels: map[string]string{}, Annotations: map[string]string{}},
		},
		{
			name: "group label from a member unit",
			snap: Snapshot{
				Units:  []*sitev1.NodeUnit{unit("u1", sitev1.NodeUnitSpec{Selector: &sitev1.Selector{MatchLabels: map[string]string{"zone": "a"}}})},
				Groups: []*sitev1.NodeGroup{group("g", sitev1.NodeGroupSpec{NodeUnits: []string{"u1"}})},
			},
			want: Desired{Labels: map[string]string{"g": "u1"}, Annotations: map[string]string{sitev1.AnnotationNodeUnits: `["u1"]`}},
		},
		{
			name: "autoFindNodeKeys labels before the unit exists",
			snap: Snapshot{Groups: []*sitev1.NodeGroup{group("zones", sitev1.NodeGroupSpec{AutoFindNodeKeys: []string{"zone"}})}},
			want: Desired{Labels: map[string]string{"zones": "zones-a"}, Annotations: map[string]string{sitev1.AnnotationNodeUnits: `["zones-a"]`}},
		},
		{
			name: "two units of one group: the current label stays",
			snap: Snapshot{
				Units: []*sitev1.NodeUnit{
					unit("u-a", sitev1.NodeUnitSpec{Nodes: []string{"n1"}}),
					unit("u-b", sitev1.NodeUnitSpec{Nodes: []string{"n1"}}),
				},
				Groups: []*sitev1.NodeGroup{group("grp", sitev1.NodeGroupSpec{NodeUnits: []string{"u-a", "u-b"}})},
			},
			want:          Desired{Labels: map[string]string{"grp": "u-b"}, Annotations: map[string]string{sitev1.AnnotationNodeUnits: `["u-a","u-b"]`}},
			wantConflicts: 1,
		},
		{
			name: "units disagree: first by name wins",
			snap: Snapshot{Units: []*sitev1.NodeUnit{
				unit("u2", sitev1.NodeUnitSpec{Nodes: []string{"n1"}, SetNode: sitev1.SetNode{Labels: map[string]string{"tier": "two"}}}),
				unit("u1", sitev1.NodeUnitSpec{Nodes: []string{"n1"}, SetNode: sitev1.SetNode{Labels: map[string]string{"tier": "one"}}}),
			}},
			want: Desired{Labels: map[string]string{"tier": "one"}, Annotations: map[string]string{sitev1.AnnotationNodeUnits: `["u1","u2"]`}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, conflicts := tc.snap.DesiredForNode(edge)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("desired (-want +got):\n%s", diff)
			}
			if len(conflicts) != tc.wantConflicts {
				t.Errorf("%d conflicts, want %d: %+v", len(conflicts), tc.wantConflicts, conflicts)
			}
		})
	}
}
