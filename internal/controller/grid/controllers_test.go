package grid_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	"github.com/sitegrid/sitegrid/internal/manager"
	"github.com/sitegrid/sitegrid/internal/testenv"
	"github.com/sitegrid/sitegrid/internal/testenv/testmanager"
)

const ns = "default"

type env struct {
	t *testing.T
	c client.Client
}

// TestGridControllers runs the manager against a real apiserver (no
// Deployment controller: tests play its part by writing child status).
func TestGridControllers(t *testing.T) {
	cfg := testenv.StartEnvtest(t)
	e := &env{c: testmanager.Start(t, cfg, manager.Options{UnitGracePeriod: 3 * time.Second})}
	for _, tc := range []struct {
		name string
		run  func(*env)
	}{
		{"one Deployment per unit, pinned to it", testOnePerUnit},
		{"templates and overrides differ per unit", testPerUnitDifferences},
		{"a vanished unit keeps its copy for the grace period", testGracePeriod},
		{"a name taken by someone else is left alone", testNameConflict},
		{"a copy whose grid labels were removed is taken back", testLabelsRemoved},
		{"a bad override is reported, other units go on", testBadOverride},
		{"status and staged rollout", testStagedRollout},
		{"ServiceGrid yields its Service", testServiceGrid},
		{"StatefulSetGrid yields one StatefulSet per unit", testStatefulSetGrid},
		{"values that clean to one name get distinct children", testNamesThatClean},
		{"refused children are reported per unit, good units go on", testRefusedChildren},
		{"a gridUniqKey with a prefix works", testPrefixedKey},
		{"a refused Service is reported", testRefusedService},
		{"overrides cannot move a copy out of its unit", testPinningOverrides},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			tc.run(e)
		})
	}
}

func (e *env) node(name string, labels map[string]string) {
	e.t.Helper()
	if err := e.c.Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) create(obj client.Object) {
	e.t.Helper()
	if err := e.c.Create(context.Background(), obj); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deployment(name string) *appsv1.Deployment {
	e.t.Helper()
	d := &appsv1.Deployment{}
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		return e.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, d)
	})
	return d
}

func (e *env) gone(obj client.Object) {
	e.t.Helper()
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		err := e.c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("%s still there (%v)", obj.GetName(), err)
	})
}

func podTemplate(app string) appsv1.DeploymentSpec {
	return appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](1),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: app + ":1"}}},
		},
	}
}

func (e *env) grid(name, key string, mutate func(*gridv1.DeploymentGrid)) *gridv1.DeploymentGrid {
	e.t.Helper()
	spec := podTemplate(name)
	g := &gridv1.DeploymentGrid{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: gridv1.DeploymentGridSpec{GridUniqKey: key, Template: &spec}}
	if mutate != nil {
		mutate(g)
	}
	e.create(g)
	return g
}

func (e *env) condition(obj client.Object, condType string, status metav1.ConditionStatus, contains string) {
	e.t.Helper()
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		var conds []metav1.Condition
		switch g := obj.(type) {
		case *gridv1.DeploymentGrid:
			conds = g.Status.Conditions
		case *gridv1.ServiceGrid:
			conds = g.Status.Conditions
		}
		c := meta.FindStatusCondition(conds, condType)
		if c == nil || c.Status != status || !strings.Contains(c.Message, contains) {
			return fmt.Errorf("condition %s = %+v, want %s containing %q", condType, c, status, contains)
		}
		return nil
	})
}

func testOnePerUnit(e *env) {
	e.node("o-1", map[string]string{"shop": "north"})
	e.node("o-2", map[string]string{"shop": "south"})
	g := e.grid("web", "shop", nil)
	for _, unit := range []string{"north", "south"} {
		d := e.deployment("web-" + unit)
		if d.Spec.Template.Spec.NodeSelector["shop"] != unit {
			e.t.Errorf("%s node selector %v", d.Name, d.Spec.Template.Spec.NodeSelector)
		}
		if d.Labels[gridv1.LabelGridSelector] != "web" || d.Labels[gridv1.LabelGridUniqKey] != "shop" || !metav1.IsControlledBy(d, g) {
			e.t.Errorf("%s labels %v owners %v", d.Name, d.Labels, d.OwnerReferences)
		}
	}
	// A new unit gets its copy.
	e.node("o-3", map[string]string{"shop": "east"})
	e.deployment("web-east")

	// Nothing changed: nothing written, and the user's spec untouched.
	before := e.deployment("web-north").ResourceVersion
	e.node("o-4", map[string]string{"shop": "north"}) // a reconcile with the same units
	time.Sleep(2 * time.Second)
	if after := e.deployment("web-north").ResourceVersion; after != before {
		e.t.Errorf("web-north rewritten though nothing changed")
	}
	got := &gridv1.DeploymentGrid{}
	if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(g), got); err != nil {
		e.t.Fatal(err)
	}
	if got.Generation != 1 {
		e.t.Errorf("the grid's spec was written: generation %d", got.Generation)
	}
}

func testLabelsRemoved(e *env) {
	e.node("l-1", map[string]string{"lab-site": "one"})
	e.grid("relabel", "lab-site", nil)
	d := e.deployment("relabel-one")
	uid := d.UID
	testenv.Modify(e.t, func(ctx context.Context) error {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
			return err
		}
		d.Labels = nil
		return e.c.Update(ctx, d)
	})
	e.node("l-2", map[string]string{"lab-site": "one"}) // a reconcile of the grid
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		got := &appsv1.Deployment{}
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(d), got); err != nil {
			return err
		}
		if got.UID != uid || got.Labels[gridv1.LabelGridSelector] != "relabel" || got.Labels[gridv1.LabelGridUnit] != "one" {
			return fmt.Errorf("copy %s (uid %s, was %s) labels %v", got.Name, got.UID, uid, got.Labels)
		}
		return nil
	})
}

func testPerUnitDifferences(e *env) {
	e.node("p-1", map[string]string{"site": "a"})
	e.node("p-2", map[string]string{"site": "b"})
	e.node("p-3", map[string]string{"site": "c"})
	e.grid("api", "site", func(g *gridv1.DeploymentGrid) {
		big := podTemplate("api")
		big.Replicas = ptr.To[int32](4)
		g.Spec.TemplatePool = map[string]appsv1.DeploymentSpec{"big": big}
		g.Spec.Templates = map[string]string{"c": "big"}
		g.Spec.Overrides = []gridv1.Override{{Units: []string{"b", "c"}, Images: []gridv1.ContainerImage{{Container: "app", Image: "api:2"}}}}
	})
	for unit, want := range map[string]struct {
		replicas int32
		image    string
	}{"a": {1, "api:1"}, "b": {1, "api:2"}, "c": {4, "api:2"}} {
		d := e.deployment("api-" + unit)
		if *d.Spec.Replicas != want.replicas || d.Spec.Template.Spec.Containers[0].Image != want.image {
			e.t.Errorf("unit %s: replicas %d image %s, want %d %s", unit, *d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Image, want.replicas, want.image)
		}
	}
}

func testGracePeriod(e *env) {
	e.node("g-1", map[string]string{"room": "x"})
	e.node("g-2", map[string]string{"room": "y"})
	e.grid("cam", "room", nil)
	e.deployment("cam-x")
	y := e.deployment("cam-y")

	// A flap: the label goes and comes back within the grace period.
	setLabel := func(node, value string) {
		testenv.Modify(e.t, func(ctx context.Context) error {
			n := &corev1.Node{}
			if err := e.c.Get(ctx, types.NamespacedName{Name: node}, n); err != nil {
				return err
			}
			if value == "" {
				delete(n.Labels, "room")
			} else {
				if n.Labels == nil {
					n.Labels = map[string]string{}
				}
				n.Labels["room"] = value
			}
			return e.c.Update(ctx, n)
		})
	}
	setLabel("g-2", "")
	testenv.Eventually(e.t, 10*time.Second, func(ctx context.Context) error {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(y), y); err != nil {
			return err
		}
		if y.Annotations[gridv1.AnnotationUnitGoneSince] == "" {
			return errors.New("not marked gone")
		}
		return nil
	})
	setLabel("g-2", "y")
	time.Sleep(4 * time.Second) // past the grace period
	if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(y), y); err != nil {
		e.t.Fatalf("cam-y removed after a flap: %v", err)
	}
	if y.Annotations[gridv1.AnnotationUnitGoneSince] != "" {
		e.t.Error("cam-y still marked gone after its unit came back")
	}

	// Gone for good: removed after the grace period.
	setLabel("g-2", "")
	e.gone(y)
}

func testNameConflict(e *env) {
	e.node("n-1", map[string]string{"lane": "k"})
	mine := podTemplate("theirs")
	e.create(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "pos-k", Namespace: ns}, Spec: mine})
	g := e.grid("pos", "lane", nil)
	e.condition(g, gridv1.ConditionConflict, metav1.ConditionTrue, "pos-k")
	d := e.deployment("pos-k")
	if len(d.OwnerReferences) != 0 || d.Spec.Template.Spec.Containers[0].Image != "theirs:1" {
		e.t.Errorf("someone else's Deployment was changed: owners %v image %s", d.OwnerReferences, d.Spec.Template.Spec.Containers[0].Image)
	}
}

func testBadOverride(e *env) {
	e.node("b-1", map[string]string{"bay": "one"})
	e.node("b-2", map[string]string{"bay": "two"})
	g := e.grid("scan", "bay", func(g *gridv1.DeploymentGrid) {
		g.Spec.Overrides = []gridv1.Override{{Name: "typo", Units: []string{"two"}, Images: []gridv1.ContainerImage{{Container: "ap", Image: "x"}}}}
	})
	e.deployment("scan-one")
	e.condition(g, gridv1.ConditionValid, metav1.ConditionFalse, `override "typo": no container "ap"`)
	if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "scan-two"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		e.t.Errorf("scan-two: %v, want no copy while its override is bad", err)
	}
}

// markAvailable plays the Deployment controller for a child.
func (e *env) markAvailable(name string) {
	e.t.Helper()
	testenv.Eventually(e.t, 10*time.Second, func(ctx context.Context) error {
		d := &appsv1.Deployment{}
		if err := e.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, d); err != nil {
			return err
		}
		r := *d.Spec.Replicas
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: r, UpdatedReplicas: r, ReadyReplicas: r, AvailableReplicas: r}
		return e.c.Status().Update(ctx, d)
	})
}

func testStagedRollout(e *env) {
	for _, u := range []string{"r1", "r2", "r3"} {
		e.node("s-"+u, map[string]string{"store": u})
	}
	g := e.grid("pay", "store", func(g *gridv1.DeploymentGrid) {
		g.Spec.RolloutStrategy = &gridv1.RolloutStrategy{MaxUnavailableUnits: ptr.To(intstr.FromInt32(1)), ProgressDeadlineSeconds: ptr.To[int32](5)}
	})
	for _, u := range []string{"r1", "r2", "r3"} {
		e.deployment("pay-" + u)
		e.markAvailable("pay-" + u)
	}
	e.condition(g, gridv1.ConditionAvailable, metav1.ConditionTrue, "all 3 units")
	if g.Status.ReadyUnits != 3 || g.Status.Units != 3 || g.Status.States["r2"].AvailableReplicas != 1 {
		e.t.Errorf("status %+v", g.Status)
	}

	image := func(u string) string { return e.deployment("pay-" + u).Spec.Template.Spec.Containers[0].Image }
	testenv.Modify(e.t, func(ctx context.Context) error {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(g), g); err != nil {
			return err
		}
		g.Spec.Template.Template.Spec.Containers[0].Image = "pay:2"
		return e.c.Update(ctx, g)
	})
	// One unit at a time: r1 first; r2 waits until r1 is Available.
	testenv.Eventually(e.t, 10*time.Second, func(ctx context.Context) error {
		if image("r1") != "pay:2" {
			return errors.New("r1 not updated")
		}
		return nil
	})
	time.Sleep(time.Second)
	if image("r2") != "pay:1" || image("r3") != "pay:1" {
		e.t.Fatalf("more than one unit updated at once: r2 %s r3 %s", image("r2"), image("r3"))
	}
	e.markAvailable("pay-r1")
	testenv.Eventually(e.t, 10*time.Second, func(ctx context.Context) error {
		if image("r2") != "pay:2" {
			return errors.New("r2 not updated after r1 became Available")
		}
		return nil
	})
	// r2 never becomes Available: the rollout halts and names it; r3 waits.
	e.condition(g, gridv1.ConditionRolloutProgressing, metav1.ConditionFalse, "units r2 did not become Available")
	if image("r3") != "pay:1" {
		e.t.Errorf("r3 updated past a halted unit")
	}
	e.markAvailable("pay-r2")
	testenv.Eventually(e.t, 20*time.Second, func(ctx context.Context) error {
		if image("r3") != "pay:2" {
			return errors.New("r3 not updated after r2 recovered")
		}
		return nil
	})
	e.markAvailable("pay-r3")
	e.condition(g, gridv1.ConditionRolloutProgressing, metav1.ConditionFalse, "every unit runs the current template")
}

func testServiceGrid(e *env) {
	sg := &gridv1.ServiceGrid{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: gridv1.ServiceGridSpec{
		GridUniqKey: "shop",
		Template:    corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}}
	e.create(sg)
	svc := &corev1.Service{}
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		return e.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "web-svc"}, svc)
	})
	if svc.Annotations[gridv1.AnnotationTopologyKeys] != `["shop"]` || !metav1.IsControlledBy(svc, sg) {
		e.t.Errorf("Service annotations %v owners %v", svc.Annotations, svc.OwnerReferences)
	}
	ip := svc.Spec.ClusterIP
	testenv.Modify(e.t, func(ctx context.Context) error {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(sg), sg); err != nil {
			return err
		}
		sg.Spec.Template.Ports[0].Port = 8080
		return e.c.Update(ctx, sg)
	})
	testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
		if err := e.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "web-svc"}, svc); err != nil {
			return err
		}
		if svc.Spec.Ports[0].Port != 8080 {
			return fmt.Errorf("port %d", svc.Spec.Ports[0].Port)
		}
		return nil
	})
	if svc.Spec.ClusterIP != ip {
		e.t.Errorf("cluster IP changed from %s to %s", ip, svc.Spec.ClusterIP)
	}

	// A Service of the name that is someone else's is left alone.
	e.create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api-svc", Namespace: ns},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 9}}}})
	taken := &gridv1.ServiceGrid{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns}, Spec: gridv1.ServiceGridSpec{
		GridUniqKey: "shop", Template: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}}
	e.create(taken)
	e.condition(taken, gridv1.ConditionConflict, metav1.ConditionTrue, "Service api-svc exists")
	theirs := &corev1.Service{}
	if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "api-svc"}, theirs); err != nil {
		e.t.Fatal(err)
	}
	if theirs.Spec.Ports[0].Port != 9 || len(theirs.OwnerReferences) != 0 {
		e.t.Errorf("someone else's Service changed: %+v", theirs.Spec.Ports)
	}
}

func testStatefulSetGrid(e *env) {
	e.node("ss-1", map[string]string{"plant": "p1"})
	e.node("ss-2", map[string]string{"plant": "p2"})
	d := podTemplate("db")
	e.create(&gridv1.StatefulSetGrid{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns}, Spec: gridv1.StatefulSetGridSpec{
		GridUniqKey: "plant",
		Template:    &appsv1.StatefulSetSpec{Replicas: d.Replicas, Selector: d.Selector, Template: d.Template, ServiceName: "db"},
	}})
	for _, p := range []string{"p1", "p2"} {
		s := &appsv1.StatefulSet{}
		testenv.Eventually(e.t, 30*time.Second, func(ctx context.Context) error {
			return e.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "db-" + p}, s)
		})
		if s.Spec.Template.Spec.NodeSelector["plant"] != p {
			e.t.Errorf("db-%s node selector %v", p, s.Spec.Template.Spec.NodeSelector)
		}
	}
}
