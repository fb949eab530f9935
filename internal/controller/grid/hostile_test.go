package grid_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// Grids built to break the controller: every refusal shows in the grid's
// conditions and as an Event naming the unit, and the good units of the
// same grid still get their copies and their status.

func raw(s string) *apiextensionsv1.JSON { return &apiextensionsv1.JSON{Raw: []byte(s)} }

// childrenByUnit are a grid's Deployments by unit value.
func (e *env) childrenByUnit(grid string) map[string]appsv1.Deployment {
	e.t.Helper()
	var list appsv1.DeploymentList
	if err := e.c.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{gridv1.LabelGridSelector: grid}); err != nil {
		e.t.Fatal(err)
	}
	out := map[string]appsv1.Deployment{}
	for _, d := range list.Items {
		out[d.Labels[gridv1.LabelGridUnit]] = d
	}
	return out
}

// waitUnits waits until the grid has a Deployment for each of units, and
// returns them by unit.
func (e *env) waitUnits(grid string, units ...string) map[string]appsv1.Deployment {
	e.t.Helper()
	var got map[string]appsv1.Deployment
	testenv.Eventually(e.t, 30*time.Second, func(context.Context) error {
		got = e.childrenByUnit(grid)
		for _, u := range units {
			if _, ok := got[u]; !ok {
				return fmt.Errorf("no copy for unit %q (have %d)", u, len(got))
			}
		}
		return nil
	})
	return got
}

// event waits for a Warning Event on the object with the reason and a note
// containing every one of contains.
func (e *env) event(obj client.Object, reason string, contains ...string) {
	e.t.Helper()
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		var list eventsv1.EventList
		if err := e.c.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Regarding.Name == obj.GetName() && ev.Reason == reason && ev.Type == corev1.EventTypeWarning &&
				!slices.ContainsFunc(contains, func(s string) bool { return !strings.Contains(ev.Note, s) }) {
				return nil
			}
		}
		return fmt.Errorf("no %s Event on %s with %q among %d", reason, obj.GetName(), contains, len(list.Items))
	})
}

// noCopy fails if the grid has a copy for the unit.
func (e *env) noCopy(grid, unit string) {
	e.t.Helper()
	if d, ok := e.childrenByUnit(grid)[unit]; ok {
		e.t.Errorf("unit %q has copy %s (node %q, selector %v), want none", unit, d.Name, d.Spec.Template.Spec.NodeName, d.Spec.Template.Spec.NodeSelector)
	}
}

// testNamesThatClean: values that clean to the same child name get
// distinct children, SuperEdge's name is kept for the value that needs no
// cleaning, and a clash no name can resolve is a Conflict naming both.
func testNamesThatClean(e *env) {
	// "a.b" cleans to probe-a-b-2e7336dc, the SuperEdge name of the other.
	e.node("c-1", map[string]string{"probe": "a.b"})
	e.node("c-2", map[string]string{"probe": "a-b-2e7336dc"})
	g := e.grid("probe", "probe", nil)
	got := e.waitUnits("probe", "a.b", "a-b-2e7336dc")
	if got["a-b-2e7336dc"].Name != "probe-a-b-2e7336dc" || got["a.b"].Name == got["a-b-2e7336dc"].Name {
		e.t.Errorf("children %s (a.b) and %s (a-b-2e7336dc)", got["a.b"].Name, got["a-b-2e7336dc"].Name)
	}
	for u, d := range got {
		e.markAvailable(d.Name)
		if d.Spec.Template.Spec.NodeSelector["probe"] != u {
			e.t.Errorf("%s node selector %v, want unit %s", d.Name, d.Spec.Template.Spec.NodeSelector, u)
		}
	}
	e.condition(g, gridv1.ConditionAvailable, metav1.ConditionTrue, "all 2 units Available")
	e.condition(g, gridv1.ConditionConflict, metav1.ConditionFalse, "")

	// A third value takes the longer name a.b falls back to. The first
	// grid's a.b keeps its child, and the newcomer gets one of its own; on a
	// new grid, a.b has no name left, and the grid says so.
	e.node("c-3", map[string]string{"probe": "a-b-2e7336dc8eba87ef"})
	got = e.waitUnits("probe", "a.b", "a-b-2e7336dc", "a-b-2e7336dc8eba87ef")
	if len(got) != 3 || got["a.b"].Name == got["a-b-2e7336dc8eba87ef"].Name {
		e.t.Errorf("children %v", got)
	}
	clash := e.grid("clash", "probe", nil)
	e.condition(clash, gridv1.ConditionConflict, metav1.ConditionTrue, `units "a.b" and "a-b-2e7336dc" both map to Deployment clash-a-b-2e7336dc`)
	e.event(clash, gridv1.ReasonNameClash, `"a.b"`, `"a-b-2e7336dc"`)
	e.waitUnits("clash", "a-b-2e7336dc", "a-b-2e7336dc8eba87ef")
	e.noCopy("clash", "a.b")
}

// testRefusedChildren: children the apiserver refuses (negative replicas, no
// container left, a unit value that is not a valid container name) are in
// Valid and an Event per unit; the good unit gets its copy and its status,
// and Available counts every unit.
func testRefusedChildren(e *env) {
	for unit, node := range map[string]string{"good": "f-1", "minus": "f-2", "empty": "f-3", "Shop_1": "f-4"} {
		e.node(node, map[string]string{"dock": unit})
	}
	g := e.grid("load", "dock", func(g *gridv1.DeploymentGrid) {
		g.Spec.Overrides = []gridv1.Override{
			{Name: "negative", Units: []string{"minus"}, Patches: []gridv1.JSONPatch{{Op: "replace", Path: "/replicas", Value: raw(`-5`)}}},
			{Name: "no containers", Units: []string{"empty"}, Patches: []gridv1.JSONPatch{{Op: "remove", Path: "/template/spec/containers"}}},
			{Name: "named after the unit", Units: []string{"Shop_1"}, Patches: []gridv1.JSONPatch{{Op: "replace", Path: "/template/spec/containers/0/name", Value: raw(`"${unit}"`)}}},
		}
	})
	good := e.waitUnits("load", "good")["good"]
	e.markAvailable(good.Name)
	for unit, why := range map[string]string{"minus": "spec.replicas", "empty": "containers", "Shop_1": "Shop_1"} {
		e.condition(g, gridv1.ConditionValid, metav1.ConditionFalse, "unit "+unit+": the apiserver refused Deployment")
		e.event(g, gridv1.ReasonChildRefused, "unit "+unit+":", why)
		e.noCopy("load", unit)
	}
	e.condition(g, gridv1.ConditionAvailable, metav1.ConditionFalse, "3 of 4 units not Available")
	if c := meta.FindStatusCondition(g.Status.Conditions, gridv1.ConditionValid); c.Reason != gridv1.ReasonChildRefused {
		e.t.Errorf("Valid reason %s, want %s", c.Reason, gridv1.ReasonChildRefused)
	}
	if c := meta.FindStatusCondition(g.Status.Conditions, gridv1.ConditionAvailable); c.Reason != gridv1.ReasonUnitsUnavailable {
		e.t.Errorf("Available reason %s, want %s", c.Reason, gridv1.ReasonUnitsUnavailable)
	}
	if s, ok := g.Status.States["good"]; !ok || s.AvailableReplicas != 1 || g.Status.ReadyUnits != 1 {
		e.t.Errorf("good unit's status: %+v (ready units %d)", g.Status.States, g.Status.ReadyUnits)
	}

	// Every unit invalid: not "no units".
	e.node("f-5", map[string]string{"pier": "only"})
	lone := e.grid("lone", "pier", func(g *gridv1.DeploymentGrid) {
		g.Spec.Overrides = []gridv1.Override{{Name: "typo", Units: []string{"only"}, Images: []gridv1.ContainerImage{{Container: "nope", Image: "x"}}}}
	})
	e.condition(lone, gridv1.ConditionAvailable, metav1.ConditionFalse, "1 of 1 units not Available: only (no copy)")
	e.event(lone, gridv1.ReasonInvalidOverride, "unit only:", `no container "nope"`)
}

// testPrefixedKey: a gridUniqKey with a prefix, which is no label value,
// works: the key goes into an annotation instead of the label.
func testPrefixedKey(e *env) {
	const key = "lab.sitegrid.io/site"
	e.node("k-1", map[string]string{key: "site-1"})
	g := e.grid("edge", key, nil)
	d := e.waitUnits("edge", "site-1")["site-1"]
	if d.Annotations[gridv1.AnnotationGridUniqKey] != key || d.Spec.Template.Spec.NodeSelector[key] != "site-1" {
		e.t.Errorf("%s annotations %v node selector %v", d.Name, d.Annotations, d.Spec.Template.Spec.NodeSelector)
	}
	e.markAvailable(d.Name)
	e.condition(g, gridv1.ConditionAvailable, metav1.ConditionTrue, "all 1 units Available")

	sg := &gridv1.ServiceGrid{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: ns}, Spec: gridv1.ServiceGridSpec{
		GridUniqKey: key, Template: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}}
	e.create(sg)
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		return e.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "edge-svc"}, &corev1.Service{})
	})
}

// testRefusedService: a ServiceGrid whose Service the apiserver refuses
// says so in Valid and an Event.
func testRefusedService(e *env) {
	sg := &gridv1.ServiceGrid{ObjectMeta: metav1.ObjectMeta{Name: "zero", Namespace: ns}, Spec: gridv1.ServiceGridSpec{
		GridUniqKey: "shop", Template: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 0}}}}}
	e.create(sg)
	e.condition(sg, gridv1.ConditionValid, metav1.ConditionFalse, "the apiserver refused Service zero-svc")
	e.event(sg, gridv1.ReasonChildRefused, "zero-svc", "port")
}

// testPinningOverrides: overrides that would take a copy out of its unit
// (nodeName in a replaced pod spec, node affinity on the unit key) are
// reported and never applied; the other unit gets its copy.
func testPinningOverrides(e *env) {
	e.node("q-1", map[string]string{"yard": "y1"})
	e.node("q-2", map[string]string{"yard": "y2"})
	e.node("q-3", map[string]string{"yard": "y3"})
	g := e.grid("crane", "yard", func(g *gridv1.DeploymentGrid) {
		g.Spec.Overrides = []gridv1.Override{
			{Name: "elsewhere", Units: []string{"y1"}, Patches: []gridv1.JSONPatch{{Op: "replace", Path: "/template/spec",
				Value: raw(`{"containers":[{"name":"app","image":"crane:1"}],"nodeName":"q-2"}`)}}},
			{Name: "affinity", Units: []string{"y2"}, Patches: []gridv1.JSONPatch{{Op: "add", Path: "/template/spec/affinity",
				Value: raw(`{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"yard","operator":"In","values":["y3"]}]}]}}}`)}}},
		}
	})
	d := e.waitUnits("crane", "y3")["y3"]
	if d.Spec.Template.Spec.NodeSelector["yard"] != "y3" || d.Spec.Template.Spec.NodeName != "" {
		e.t.Errorf("y3's copy: node %q selector %v", d.Spec.Template.Spec.NodeName, d.Spec.Template.Spec.NodeSelector)
	}
	e.condition(g, gridv1.ConditionValid, metav1.ConditionFalse, "unit y1: the overrides change nodeName")
	e.condition(g, gridv1.ConditionValid, metav1.ConditionFalse, "unit y2: the overrides change node affinity on yard")
	e.event(g, gridv1.ReasonPinningOverride, "unit y1:", "nodeName")
	e.event(g, gridv1.ReasonPinningOverride, "unit y2:", "node affinity on yard")
	e.noCopy("crane", "y1")
	e.noCopy("crane", "y2")
	if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "crane-y1"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		e.t.Errorf("crane-y1: %v, want none", err)
	}
}
