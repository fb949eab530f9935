package site_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/internal/manager"
	"github.com/sitegrid/sitegrid/internal/testenv"
	"github.com/sitegrid/sitegrid/internal/testenv/testmanager"
)

type env struct {
	t  *testing.T
	c  client.Client
	cs kubernetes.Interface
}

// TestSiteControllers runs the manager, with its real wiring, against a real
// apiserver, and checks what a user sees on nodes, units and groups.
func TestSiteControllers(t *testing.T) {
	cfg := testenv.StartEnvtest(t)
	c := testmanager.Start(t, cfg, manager.Options{})
	e := &env{c: c, cs: kubernetes.NewForConfigOrDie(cfg)}
	for _, tc := range []struct {
		name string
		run  func(*env)
	}{
		{"setNode is applied and cleaned up", testSetNode},
		{"group label and membership changes", testGroupLabel},
		{"two units of one group claim a node", testConflict},
		{"unschedulable cordons and restores", testCordon},
		{"autoFindNodeKeys creates and removes units", testAutoFind},
		{"ready rate follows node readiness", testReadyRate},
		{"fields held by others are left alone", testForeignFields},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			tc.run(e)
		})
	}
}

func (e *env) node(name string, labels map[string]string) {
	e.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := e.c.Create(context.Background(), n); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) create(obj client.Object) {
	e.t.Helper()
	if err := e.c.Create(context.Background(), obj); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) getNode(name string) *corev1.Node {
	e.t.Helper()
	n, err := e.cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// modifyNode changes a node as a user would, again if a controller wrote it
// in between.
func (e *env) modifyNode(name string, opts metav1.UpdateOptions, change func(*corev1.Node)) {
	e.t.Helper()
	testenv.Modify(e.t, func(ctx context.Context) error {
		n, err := e.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		change(n)
		_, err = e.cs.CoreV1().Nodes().Update(ctx, n, opts)
		return err
	})
}

// labelsEventually waits until the node's labels are exactly want.
func (e *env) labelsEventually(name string, want map[string]string) {
	e.t.Helper()
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		n, err := e.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !maps.Equal(n.Labels, want) {
			return fmt.Errorf("node %s labels %v, want %v", name, n.Labels, want)
		}
		return nil
	})
}

func (e *env) update(obj client.Object, mutate func()) {
	e.t.Helper()
	testenv.Eventually(e.t, 10*time.Second, func(ctx context.Context) error {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate()
		return e.c.Update(ctx, obj)
	})
}

func testSetNode(e *env) {
	e.node("sn-1", map[string]string{"owner": "user"})
	e.node("sn-2", nil)
	u := &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "sn-unit"}, Spec: sitev1.NodeUnitSpec{
		Nodes: []string{"sn-1", "sn-2"},
		SetNode: sitev1.SetNode{
			Labels:      map[string]string{"tier": "edge"},
			Annotations: map[string]string{"example.com/site": "shop-1"},
			Taints:      []sitev1.Taint{{Key: "edge.example.com/site", Value: "shop-1", Effect: corev1.TaintEffectNoSchedule}},
		},
	}}
	e.create(u)
	e.labelsEventually("sn-1", map[string]string{"owner": "user", "tier": "edge"})
	e.labelsEventually("sn-2", map[string]string{"tier": "edge"})
	n := e.getNode("sn-1")
	if n.Annotations["example.com/site"] != "shop-1" || len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Value != "shop-1" {
		e.t.Errorf("node sn-1: annotations %v taints %v", n.Annotations, n.Spec.Taints)
	}

	// sn-2 leaves the unit: it loses what the unit gave it.
	e.update(u, func() { u.Spec.Nodes = []string{"sn-1"} })
	e.labelsEventually("sn-2", map[string]string{})
	testenv.Eventually(e.t, 10*time.Second, func(ctx context.Context) error {
		if n := e.getNode("sn-2"); len(n.Spec.Taints) != 0 || n.Annotations["example.com/site"] != "" {
			return fmt.Errorf("sn-2 keeps taints %v annotations %v", n.Spec.Taints, n.Annotations)
		}
		return nil
	})

	// The unit is deleted: exactly its fields go, the user's label stays.
	if err := e.c.Delete(context.Background(), u); err != nil {
		e.t.Fatal(err)
	}
	e.labelsEventually("sn-1", map[string]string{"owner": "user"})
	testenv.Eventually(e.t, 10*time.Second, func(ctx context.Context) error {
		if n := e.getNode("sn-1"); len(n.Spec.Taints) != 0 || len(n.Annotations) != 0 {
			return fmt.Errorf("sn-1 keeps taints %v annotations %v", n.Spec.Taints, n.Annotations)
		}
		return nil
	})
}

func testGroupLabel(e *env) {
	e.node("gl-1", map[string]string{"shop": "north"})
	e.node("gl-2", map[string]string{"shop": "south"})
	north := &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "north", Labels: map[string]string{"region": "eu"}},
		Spec: sitev1.NodeUnitSpec{Selector: &sitev1.Selector{MatchLabels: map[string]string{"shop": "north"}}}}
	south := &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "south"},
		Spec: sitev1.NodeUnitSpec{Selector: &sitev1.Selector{MatchLabels: map[string]string{"shop": "south"}}}}
	e.create(north)
	e.create(south)
	g := &sitev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: "shops"}, Spec: sitev1.NodeGroupSpec{
		NodeUnits: []string{"south"}, Selector: &sitev1.Selector{MatchLabels: map[string]string{"region": "eu"}}}}
	e.create(g)
	e.labelsEventually("gl-1", map[string]string{"shop": "north", "shops": "north"})
	e.labelsEventually("gl-2", map[string]string{"shop": "south", "shops": "south"})
	testenv.Eventually(e.t, 10*time.Second, func(ctx context.Context) error {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(g), g); err != nil {
			return err
		}
		if g.Status.UnitNumber != 2 || !slices.Equal(g.Status.NodeUnits, []string{"north", "south"}) {
			return fmt.Errorf("group status %+v", g.Status)
		}
		return nil
	})

	// Relabelling a node moves it to the other unit at once.
	e.modifyNode("gl-1", metav1.UpdateOptions{}, func(n *corev1.Node) { n.Labels["shop"] = "south" })
	e.labelsEventually("gl-1", map[string]string{"shop": "south", "shops": "south"})

	// Deleting the group removes exactly the label it added.
	if err := e.c.Delete(context.Background(), g); err != nil {
		e.t.Fatal(err)
	}
	e.labelsEventually("gl-1", map[string]string{"shop": "south"})
	e.labelsEventually("gl-2", map[string]string{"shop": "south"})
}

func testConflict(e *env) {
	e.node("cf-1", map[string]string{"rack": "r1"})
	e.create(&sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "cf-b"}, Spec: sitev1.NodeUnitSpec{Nodes: []string{"cf-1"}}})
	g := &sitev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: "racks"}, Spec: sitev1.NodeGroupSpec{NodeUnits: []string{"cf-a", "cf-b"}}}
	e.create(g)
	e.labelsEventually("cf-1", map[string]string{"rack": "r1", "racks": "cf-b"})

	// cf-a sorts first, but cf-1 already belongs to cf-b and stays there.
	e.create(&sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "cf-a"}, Spec: sitev1.NodeUnitSpec{
		Selector: &sitev1.Selector{MatchLabels: map[string]string{"rack": "r1"}}}})
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(g), g); err != nil {
			return err
		}
		c := meta.FindStatusCondition(g.Status.Conditions, sitev1.GroupConflict)
		if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "cf-1") {
			return fmt.Errorf("Conflict condition %+v", c)
		}
		return nil
	})
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		evs, err := e.cs.EventsV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "reason=" + sitev1.ReasonNodesClaimedTwice})
		if err != nil {
			return err
		}
		for _, ev := range evs.Items {
			if ev.Regarding.Name == "racks" && strings.Contains(ev.Note, "cf-1") {
				return nil
			}
		}
		return errors.New("no NodesClaimedTwice event for cf-1")
	})
	// Nothing flaps: the node is not written again while the conflict lasts.
	before := e.getNode("cf-1")
	if before.Labels["racks"] != "cf-b" {
		e.t.Fatalf("conflict moved the node to %q", before.Labels["racks"])
	}
	time.Sleep(3 * time.Second)
	if after := e.getNode("cf-1"); after.ResourceVersion != before.ResourceVersion {
		e.t.Errorf("node written during a steady conflict: labels %v", after.Labels)
	}

	// Resolving it clears the condition.
	if err := e.c.Delete(context.Background(), &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "cf-a"}}); err != nil {
		e.t.Fatal(err)
	}
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(g), g); err != nil {
			return err
		}
		if meta.IsStatusConditionTrue(g.Status.Conditions, sitev1.GroupConflict) {
			return errors.New("Conflict still True")
		}
		return nil
	})
}

func testCordon(e *env) {
	e.node("cd-1", nil)
	e.node("cd-2", nil)
	// cd-2 was cordoned by an operator before the unit existed.
	e.modifyNode("cd-2", metav1.UpdateOptions{FieldManager: "kubectl-cordon"}, func(n *corev1.Node) { n.Spec.Unschedulable = true })
	u := &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "cd-unit"}, Spec: sitev1.NodeUnitSpec{Nodes: []string{"cd-1", "cd-2"}, Unschedulable: true}}
	e.create(u)
	unschedulable := func(name string, want bool) {
		e.t.Helper()
		testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
			if got := e.getNode(name).Spec.Unschedulable; got != want {
				return fmt.Errorf("node %s unschedulable=%t, want %t", name, got, want)
			}
			return nil
		})
	}
	unschedulable("cd-1", true)
	unschedulable("cd-2", true)
	e.update(u, func() { u.Spec.Unschedulable = false })
	unschedulable("cd-1", false)
	// The operator's cordon is theirs: uncordoning the unit restores it.
	time.Sleep(2 * time.Second)
	unschedulable("cd-2", true)
}

func testAutoFind(e *env) {
	e.node("af-1", map[string]string{"zone": "a"})
	e.node("af-2", map[string]string{"zone": "a"})
	e.node("af-3", map[string]string{"zone": "b"})
	g := &sitev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: "zones"}, Spec: sitev1.NodeGroupSpec{AutoFindNodeKeys: []string{"zone"}}}
	e.create(g)
	e.labelsEventually("af-1", map[string]string{"zone": "a", "zones": "zones-a"})
	e.labelsEventually("af-3", map[string]string{"zone": "b", "zones": "zones-b"})
	unitExists := func(name string, want bool) {
		e.t.Helper()
		testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
			u := &sitev1.NodeUnit{}
			err := e.c.Get(ctx, types.NamespacedName{Name: name}, u)
			switch {
			case want && err != nil:
				return err
			case want && !metav1.IsControlledBy(u, g):
				return fmt.Errorf("unit %s not owned by the group", name)
			case !want && err == nil && u.DeletionTimestamp == nil:
				return fmt.Errorf("unit %s still exists", name)
			case !want && err != nil && !apierrors.IsNotFound(err):
				return err
			}
			return nil
		})
	}
	unitExists("zones-a", true)
	unitExists("zones-b", true)
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		u := &sitev1.NodeUnit{}
		if err := e.c.Get(ctx, types.NamespacedName{Name: "zones-a"}, u); err != nil {
			return err
		}
		if u.Status.ReadyRate != "0/2" {
			return fmt.Errorf("zones-a readyRate %q, want 0/2", u.Status.ReadyRate)
		}
		return nil
	})

	e.node("af-4", map[string]string{"zone": "c"})
	unitExists("zones-c", true)
	e.labelsEventually("af-4", map[string]string{"zone": "c", "zones": "zones-c"})

	if err := e.cs.CoreV1().Nodes().Delete(context.Background(), "af-3", metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	unitExists("zones-b", false)
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(g), g); err != nil {
			return err
		}
		if !slices.Equal(g.Status.NodeUnits, []string{"zones-a", "zones-c"}) || g.Status.UnitNumber != 2 {
			return fmt.Errorf("group units %v (%d)", g.Status.NodeUnits, g.Status.UnitNumber)
		}
		return nil
	})
	if err := e.c.Delete(context.Background(), g); err != nil {
		e.t.Fatal(err)
	}
	e.labelsEventually("af-1", map[string]string{"zone": "a"})
	e.labelsEventually("af-4", map[string]string{"zone": "c"})
}

func testReadyRate(e *env) {
	e.node("rr-1", nil)
	e.node("rr-2", nil)
	u := &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "rr"}, Spec: sitev1.NodeUnitSpec{Nodes: []string{"rr-1", "rr-2"}}}
	e.create(u)
	// sitegrid writes the unit list on the nodes meanwhile: retried on a
	// conflict.
	setReady := func(name string, ready corev1.ConditionStatus) {
		testenv.Modify(e.t, func(ctx context.Context) error {
			n := e.getNode(name)
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
			_, err := e.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
			return err
		})
	}
	rate := func(want string, ready metav1.ConditionStatus) {
		e.t.Helper()
		testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
			if err := e.c.Get(ctx, client.ObjectKeyFromObject(u), u); err != nil {
				return err
			}
			c := meta.FindStatusCondition(u.Status.Conditions, sitev1.UnitReady)
			if u.Status.ReadyRate != want || c == nil || c.Status != ready {
				return fmt.Errorf("readyRate %q condition %+v, want %q and Ready=%s", u.Status.ReadyRate, c, want, ready)
			}
			return nil
		})
	}
	setReady("rr-1", corev1.ConditionTrue)
	setReady("rr-2", corev1.ConditionTrue)
	rate("2/2", metav1.ConditionTrue)
	setReady("rr-2", corev1.ConditionFalse)
	rate("1/2", metav1.ConditionFalse)
	if !slices.Equal(u.Status.NotReadyNodes, []string{"rr-2"}) {
		e.t.Errorf("notReadyNodes %v, want [rr-2]", u.Status.NotReadyNodes)
	}
}

func testForeignFields(e *env) {
	e.node("ff-1", map[string]string{"tier": "core"})
	e.modifyNode("ff-1", metav1.UpdateOptions{}, func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule}}
	})
	u := &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "ff"}, Spec: sitev1.NodeUnitSpec{Nodes: []string{"ff-1"}, SetNode: sitev1.SetNode{
		Labels: map[string]string{"tier": "edge", "site": "ff"},
		Taints: []sitev1.Taint{{Key: "dedicated", Value: "edge", Effect: corev1.TaintEffectNoSchedule}},
	}}}
	e.create(u)
	e.labelsEventually("ff-1", map[string]string{"tier": "core", "site": "ff"})
	if n := e.getNode("ff-1"); len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Value != "db" {
		e.t.Errorf("someone else's taint changed: %v", n.Spec.Taints)
	}
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		evs, err := e.cs.EventsV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "reason=FieldHeldByOthers"})
		if err != nil {
			return err
		}
		for _, ev := range evs.Items {
			if ev.Regarding.Name == "ff" && strings.Contains(ev.Note, "tier") {
				return nil
			}
		}
		var notes []string
		for _, ev := range evs.Items {
			notes = append(notes, ev.Regarding.Name+": "+ev.Note)
		}
		return fmt.Errorf("no FieldHeldByOthers event about label tier in %q", notes)
	})
	if err := e.c.Delete(context.Background(), u); err != nil {
		e.t.Fatal(err)
	}
	e.labelsEventually("ff-1", map[string]string{"tier": "core"})
}
