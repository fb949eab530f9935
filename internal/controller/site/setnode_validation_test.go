package site_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/internal/controller/site"
	"github.com/sitegrid/sitegrid/internal/manager"
	"github.com/sitegrid/sitegrid/internal/testenv"
	"github.com/sitegrid/sitegrid/internal/testenv/testmanager"
)

func TestInvalidSetNode(t *testing.T) {
	big := map[string]string{}
	for i := 0; i < 5; i++ {
		big[fmt.Sprintf("example.com/blob-%d", i)] = strings.Repeat("x", 60*1024)
	}
	for _, tc := range []struct {
		name string
		in   sitev1.SetNode
		want []string
	}{
		{"valid", sitev1.SetNode{Labels: map[string]string{"tier": "edge"}, Annotations: map[string]string{"a.example.com/b": "any text"},
			Taints: []sitev1.Taint{{Key: "k", Value: "v", Effect: "NoSchedule"}}}, nil},
		{"label value with spaces", sitev1.SetNode{Labels: map[string]string{"good": "bad value with spaces"}},
			[]string{`label good value "bad value with spaces"`}},
		{"label key", sitev1.SetNode{Labels: map[string]string{"a b": "x"}}, []string{`label key "a b"`}},
		{"annotations too large together", sitev1.SetNode{Annotations: big}, []string{"annotations: may not be more than 262144 bytes"}},
		{"taint effect", sitev1.SetNode{Taints: []sitev1.Taint{{Key: "k", Effect: "Never"}}}, []string{`taint k effect "Never"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := site.InvalidSetNode(tc.in)
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %d problems like %q", got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("problem %d: %s", i, cmp.Diff(tc.want[i], got[i]))
				}
			}
		})
	}
}

// TestBadUnitDoesNotPoisonNode: a unit whose setNode the apiserver would
// refuse on a Node (annotations over the size limit, which the CRD cannot
// check) is reported on the unit, in its status and an Event, while the
// other unit of the same node still gets its labels on it.
func TestBadUnitDoesNotPoisonNode(t *testing.T) {
	cfg := testenv.StartEnvtest(t)
	c := testmanager.Start(t, cfg, manager.Options{})
	e := &env{t: t, c: c, cs: kubernetes.NewForConfigOrDie(cfg)}
	big := map[string]string{}
	for i := 0; i < 5; i++ {
		big[fmt.Sprintf("example.com/blob-%d", i)] = strings.Repeat("x", 60*1024)
	}
	e.node("shared", map[string]string{"shop": "berlin"})
	e.create(&sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "a-bad"}, Spec: sitev1.NodeUnitSpec{
		Nodes: []string{"shared"}, SetNode: sitev1.SetNode{Labels: map[string]string{"bad": "yes"}, Annotations: big},
	}})
	e.create(&sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "b-good"}, Spec: sitev1.NodeUnitSpec{
		Selector: &sitev1.Selector{MatchLabels: map[string]string{"shop": "berlin"}},
		SetNode:  sitev1.SetNode{Labels: map[string]string{"tier": "edge"}},
	}})
	e.labelsEventually("shared", map[string]string{"shop": "berlin", "tier": "edge"})

	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		u := &sitev1.NodeUnit{}
		if err := c.Get(ctx, client.ObjectKey{Name: "a-bad"}, u); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(u.Status.Conditions, sitev1.UnitSetNodeValid)
		if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != sitev1.ReasonInvalidSetNode || !strings.Contains(cond.Message, "262144 bytes") {
			return fmt.Errorf("unit a-bad condition %s: %+v", sitev1.UnitSetNodeValid, cond)
		}
		good := &sitev1.NodeUnit{}
		if err := c.Get(ctx, client.ObjectKey{Name: "b-good"}, good); err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(good.Status.Conditions, sitev1.UnitSetNodeValid); cond == nil || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("unit b-good condition %s: %+v", sitev1.UnitSetNodeValid, cond)
		}
		evs, err := e.cs.EventsV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "reason=" + sitev1.ReasonInvalidSetNode})
		if err != nil {
			return err
		}
		for _, ev := range evs.Items {
			if ev.Regarding.Name == "a-bad" && strings.Contains(ev.Note, "262144 bytes") {
				return nil
			}
		}
		return fmt.Errorf("no %s Event on unit a-bad among %d", sitev1.ReasonInvalidSetNode, len(evs.Items))
	})
	for k := range e.getNode("shared").Annotations {
		if strings.HasPrefix(k, "example.com/blob-") {
			t.Errorf("the invalid unit's annotation %s reached the node", k)
		}
	}
}
