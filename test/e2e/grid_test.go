package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestServiceGroup: on the full control plane with simulated nodes in units
// of a NodeGroup, grids stamp a copy into every unit, pods run only on their
// unit's nodes, overrides change one unit, a staged rollout goes unit by unit
// and halts on a unit that cannot become Available.
func TestServiceGroup(t *testing.T) {
	cp := testenv.StartControlPlane(t, testenv.ControlPlaneOptions{})
	ctx := context.Background()
	cs, c := startSitegrid(t, cp)
	addNode := func(name, zone, ip string) {
		t.Helper()
		if err := controlplane.CreateNode(ctx, cs, controlplane.Node{Name: name, InternalIP: ip, Labels: map[string]string{"zone": zone}}); err != nil {
			t.Fatal(err)
		}
	}
	addNode("a-1", "a", "198.18.1.10")
	addNode("a-2", "a", "198.18.1.11")
	addNode("b-1", "b", "198.18.2.10")
	if err := c.Create(ctx, &sitev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: "shops"}, Spec: sitev1.NodeGroupSpec{AutoFindNodeKeys: []string{"zone"}}}); err != nil {
		t.Fatal(err)
	}

	labels := map[string]string{"app": "web"}
	g := &gridv1.DeploymentGrid{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: gridv1.DeploymentGridSpec{
			GridUniqKey: "shops",
			Template: &appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](2),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}},
				},
			},
			Overrides: []gridv1.Override{{Name: "small shop", Units: []string{"shops-b"}, Replicas: ptr.To[int32](1),
				Images: []gridv1.ContainerImage{{Container: "web", Image: "web:edge"}}}},
		},
	}
	if err := c.Create(ctx, g); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &gridv1.ServiceGrid{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: gridv1.ServiceGridSpec{
		GridUniqKey: "shops", Template: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}}},
	}}); err != nil {
		t.Fatal(err)
	}

	podsPerUnit(t, cs, map[string]unitPods{"shops-a": {2, "web:1"}, "shops-b": {1, "web:edge"}})
	gridCondition(t, c, g, gridv1.ConditionAvailable, metav1.ConditionTrue, "all 2 units")

	// The ServiceGrid's Service carries the topology key and selects every
	// unit's pods; the edge hub keeps traffic in the unit.
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		svc, err := cs.CoreV1().Services("default").Get(ctx, "web-svc", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if svc.Annotations["topologyKeys"] != `["shops"]` {
			return fmt.Errorf("annotations %v", svc.Annotations)
		}
		return nil
	})

	// kubectl shows units and ready units.
	out, err := exec.Command(testenv.Binaries(t).Path(kubebin.Kubectl), "--kubeconfig", cp.AdminKubeconfig, "get", "deploymentgrids").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "UNITS") || !strings.Contains(string(out), "web    2       2") {
		t.Errorf("kubectl get deploymentgrids: %v\n%s", err, out)
	}

	// A new site joins: its copy follows.
	addNode("c-1", "c", "198.18.3.10")
	podsPerUnit(t, cs, map[string]unitPods{"shops-a": {2, "web:1"}, "shops-b": {1, "web:edge"}, "shops-c": {2, "web:1"}})

	// sitegridctl shows the per-unit state.
	status, err := exec.Command(sitegridctl(t), "grid", "status", "web", "--kubeconfig", cp.AdminKubeconfig).CombinedOutput()
	if err != nil || !strings.Contains(string(status), "shops-c") || !strings.Contains(string(status), "web-shops-b") {
		t.Errorf("sitegridctl grid status: %v\n%s", err, status)
	}

	// A staged rollout: one unit at a time; shops-b cannot schedule its new
	// pods, so the rollout halts there and shops-c keeps the old template.
	testenv.Modify(t, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(g), g); err != nil {
			return err
		}
		g.Spec.RolloutStrategy = &gridv1.RolloutStrategy{MaxUnavailableUnits: ptr.To(intstr.FromInt32(1)), ProgressDeadlineSeconds: ptr.To[int32](15)}
		g.Spec.Template.Template.Spec.Containers[0].Image = "web:2"
		g.Spec.Overrides = append(g.Spec.Overrides, gridv1.Override{Name: "broken", Units: []string{"shops-b"}, NodeSelector: map[string]string{"missing": "true"}})
		g.Spec.Overrides[0].Images = nil
		return c.Update(ctx, g)
	})
	gridCondition(t, c, g, gridv1.ConditionRolloutProgressing, metav1.ConditionFalse, "units shops-b did not become Available")
	image := func(unit string) string {
		d, err := cs.AppsV1().Deployments("default").Get(ctx, "web-"+unit, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Spec.Containers[0].Image
	}
	if image("shops-a") != "web:2" || image("shops-b") != "web:2" || image("shops-c") != "web:1" {
		t.Errorf("images a=%s b=%s c=%s, want web:2, web:2, web:1", image("shops-a"), image("shops-b"), image("shops-c"))
	}
	podsPerUnit(t, cs, map[string]unitPods{"shops-a": {2, "web:2"}, "shops-c": {2, "web:1"}})
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		evs, err := cs.EventsV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "reason=" + gridv1.ReasonRolloutHalted})
		if err != nil || len(evs.Items) == 0 || !strings.Contains(evs.Items[0].Note, "shops-b") {
			return fmt.Errorf("no halt event naming shops-b (%v)", err)
		}
		return nil
	})

	// Fixing the unit lets the rollout finish.
	testenv.Modify(t, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(g), g); err != nil {
			return err
		}
		g.Spec.Overrides = g.Spec.Overrides[:1]
		return c.Update(ctx, g)
	})
	podsPerUnit(t, cs, map[string]unitPods{"shops-a": {2, "web:2"}, "shops-b": {1, "web:2"}, "shops-c": {2, "web:2"}})
	gridCondition(t, c, g, gridv1.ConditionRolloutProgressing, metav1.ConditionFalse, "every unit runs the current template")

	// A StatefulSetGrid: one StatefulSet per unit, whose pods run.
	if err := c.Create(ctx, &gridv1.StatefulSetGrid{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "default"}, Spec: gridv1.StatefulSetGridSpec{
		GridUniqKey: "shops",
		Template: &appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), ServiceName: "db",
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "db:1"}}}}},
	}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		for _, unit := range []string{"shops-a", "shops-b", "shops-c"} {
			p, err := cs.CoreV1().Pods("default").Get(ctx, "db-"+unit+"-0", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != corev1.PodRunning {
				return fmt.Errorf("pod %s is %s", p.Name, p.Status.Phase)
			}
			if unitOfNode(ctx, cs, p.Spec.NodeName) != unit {
				return fmt.Errorf("pod %s on node %s outside unit %s", p.Name, p.Spec.NodeName, unit)
			}
		}
		return nil
	})

	// Deleting the grid deletes its copies (the garbage collector follows
	// the owner references).
	if err := c.Delete(ctx, g); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		list, err := cs.AppsV1().Deployments("default").List(ctx, metav1.ListOptions{LabelSelector: gridv1.LabelGridSelector + "=web"})
		if err != nil {
			return err
		}
		if len(list.Items) > 0 {
			return fmt.Errorf("%d Deployments of the deleted grid remain", len(list.Items))
		}
		return nil
	})
}

type unitPods struct {
	count int
	image string
}

// podsPerUnit waits until each unit runs exactly count Running pods of the
// web grid with that image, all on nodes of the unit.
func podsPerUnit(t *testing.T, cs kubernetes.Interface, want map[string]unitPods) {
	t.Helper()
	testenv.Eventually(t, 90*time.Second, func(ctx context.Context) error {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: gridv1.LabelGridSelector + "=web"})
		if err != nil {
			return err
		}
		got := map[string]int{}
		for _, p := range pods.Items {
			unit := p.Labels[gridv1.LabelGridUnit]
			w, ok := want[unit]
			if !ok || p.DeletionTimestamp != nil {
				continue
			}
			if p.Status.Phase != corev1.PodRunning || p.Spec.Containers[0].Image != w.image {
				continue
			}
			if nodeUnit := unitOfNode(ctx, cs, p.Spec.NodeName); nodeUnit != unit {
				return fmt.Errorf("pod %s of unit %s runs on node %s of unit %q", p.Name, unit, p.Spec.NodeName, nodeUnit)
			}
			got[unit]++
		}
		for unit, w := range want {
			if got[unit] != w.count {
				return fmt.Errorf("unit %s runs %d pods of %s, want %d (all: %v)", unit, got[unit], w.image, w.count, got)
			}
		}
		return nil
	})
}

func unitOfNode(ctx context.Context, cs kubernetes.Interface, node string) string {
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return n.Labels["shops"]
}

func gridCondition(t *testing.T, c client.Client, g *gridv1.DeploymentGrid, condType string, status metav1.ConditionStatus, contains string) {
	t.Helper()
	testenv.Eventually(t, 90*time.Second, func(ctx context.Context) error {
		got := &gridv1.DeploymentGrid{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: g.Namespace, Name: g.Name}, got); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(got.Status.Conditions, condType)
		if cond == nil || cond.Status != status || !strings.Contains(cond.Message, contains) {
			return fmt.Errorf("%s = %+v", condType, cond)
		}
		return nil
	})
}
