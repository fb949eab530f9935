package manager_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	sitev1alpha1 "github.com/sitegrid/sitegrid/api/site/v1alpha1"
	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/internal/manager"
	"github.com/sitegrid/sitegrid/internal/testenv"
	"github.com/sitegrid/sitegrid/internal/testenv/testmanager"
)

// TestSiteConversion runs the manager's conversion webhook behind a real
// apiserver: SuperEdge's v1alpha1 demo manifests apply verbatim and read
// back as v1alpha2 with every field mapped, objects written in either
// version read the same in the other, and a round trip loses nothing.
func TestSiteConversion(t *testing.T) {
	cfg, hooks := testenv.StartEnvtestWithConversion(t, manager.Scheme())
	c := testmanager.Start(t, cfg, manager.Options{WebhookPort: hooks.Port, WebhookCertDir: hooks.CertDir})
	ctx := context.Background()

	// SuperEdge's demos, applied as a user would with kubectl apply.
	for _, f := range []string{"nodeunit_demo.yaml", "nodegroup_demo.yaml"} {
		u := readManifest(t, filepath.Join(testenv.RepoRoot(t), "test", "testdata", "superedge", f))
		testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
			return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()), client.FieldOwner("kubectl"), client.ForceOwnership)
		})
	}

	unit := &sitev1.NodeUnit{}
	if err := c.Get(ctx, types.NamespacedName{Name: "nodeunit-demo"}, unit); err != nil {
		t.Fatal(err)
	}
	wantSpec := sitev1.NodeUnitSpec{
		Type: sitev1.EdgeNodeUnit, Nodes: []string{"nodename"},
		Selector: &sitev1.Selector{MatchLabels: map[string]string{"kubernetes.io/hostname": "nodename"}},
		SetNode:  sitev1.SetNode{Labels: map[string]string{"nodeunit": "demo"}},
	}
	if d := cmp.Diff(wantSpec, unit.Spec, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("the v1alpha1 demo unit read as v1alpha2 (-want +got):\n%s", d)
	}
	group := &sitev1.NodeGroup{}
	if err := c.Get(ctx, types.NamespacedName{Name: "nodegroup-demo"}, group); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"unit-node-edge"}, group.Spec.NodeUnits); d != "" {
		t.Errorf("the demo group's nodeunits read as v1alpha2 nodeUnits (-want +got):\n%s", d)
	}
	if got := group.Annotations[sitev1alpha1.AnnotationV1alpha1Fields]; got != `{"workload":[{"name":"demo","type":"Deployment"}]}` {
		t.Errorf("the demo group's workload is kept as %q", got)
	}
	old := &sitev1alpha1.NodeGroup{}
	if err := c.Get(ctx, types.NamespacedName{Name: "nodegroup-demo"}, old); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]sitev1alpha1.Workload{{Name: "demo", Type: "Deployment"}}, old.Spec.Workload); d != "" {
		t.Errorf("workload read back in v1alpha1 (-want +got):\n%s", d)
	}
	if _, ok := old.Annotations[sitev1alpha1.AnnotationV1alpha1Fields]; ok {
		t.Errorf("a v1alpha1 reader sees the annotation that keeps its own fields: %v", old.Annotations)
	}

	// Written in v1alpha2, read in v1alpha1.
	created := &sitev1.NodeUnit{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-1"},
		Spec: sitev1.NodeUnitSpec{Type: sitev1.CloudNodeUnit, Unschedulable: true, Selector: &sitev1.Selector{MatchLabels: map[string]string{"shop": "1"}},
			SetNode: sitev1.SetNode{Annotations: map[string]string{"a": "b"}, Taints: []sitev1.Taint{{Key: "edge", Value: "yes", Effect: corev1.TaintEffectNoSchedule}}}},
	}
	if err := c.Create(ctx, created); err != nil {
		t.Fatal(err)
	}
	v1 := &sitev1alpha1.NodeUnit{}
	if err := c.Get(ctx, types.NamespacedName{Name: "shop-1"}, v1); err != nil {
		t.Fatal(err)
	}
	wantV1 := sitev1alpha1.NodeUnitSpec{Type: "cloud", Unschedulable: true, Selector: &sitev1.Selector{MatchLabels: map[string]string{"shop": "1"}},
		SetNode: sitev1alpha1.SetNode{Annotations: map[string]string{"a": "b"}, Taints: []corev1.Taint{{Key: "edge", Value: "yes", Effect: corev1.TaintEffectNoSchedule}}}}
	if d := cmp.Diff(wantV1, v1.Spec, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("a v1alpha2 unit read as v1alpha1 (-want +got):\n%s", d)
	}

	// Changed in v1alpha1 with a field v1alpha2 lacks, read in v1alpha2 and
	// back: the change is there, the field kept.
	testenv.Modify(t, func(ctx context.Context) error {
		if err := c.Get(ctx, types.NamespacedName{Name: "shop-1"}, v1); err != nil {
			return err
		}
		v1.Spec.SetNode.Labels = map[string]string{"tier": "shop"}
		v1.Spec.Taints = []corev1.Taint{{Key: "unit-only", Effect: corev1.TaintEffectPreferNoSchedule}}
		return c.Update(ctx, v1)
	})
	if err := c.Get(ctx, types.NamespacedName{Name: "shop-1"}, unit); err != nil {
		t.Fatal(err)
	}
	if unit.Spec.SetNode.Labels["tier"] != "shop" || len(unit.Spec.SetNode.Taints) != 1 || unit.Spec.Type != sitev1.CloudNodeUnit {
		t.Errorf("the v1alpha1 change read as v1alpha2: %+v", unit.Spec)
	}
	again := &sitev1alpha1.NodeUnit{}
	if err := c.Get(ctx, types.NamespacedName{Name: "shop-1"}, again); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(v1.Spec, again.Spec, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("v1alpha1 -> v1alpha2 -> v1alpha1 changed the spec (-wrote +read):\n%s", d)
	}

	// The controllers' status, written in v1alpha2, reads in v1alpha1.
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		if err := c.Get(ctx, types.NamespacedName{Name: "nodeunit-demo"}, again); err != nil {
			return err
		}
		if again.Status.ReadyRate != "0/0" {
			return fmt.Errorf("readyrate %q, want 0/0", again.Status.ReadyRate)
		}
		return nil
	})
}

func readManifest(t *testing.T, path string) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &u.Object); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return u
}
