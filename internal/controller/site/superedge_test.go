package site_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/internal/controller/site"
	"github.com/sitegrid/sitegrid/internal/manager"
	"github.com/sitegrid/sitegrid/internal/testenv"
	"github.com/sitegrid/sitegrid/internal/testenv/testmanager"
)

// TestSuperEdgeNodeView: what SuperEdge's users and tools read is there.
// The manager makes SuperEdge's default units it is asked for, and keeps
// every node's nodeunits.superedge.io annotation (the JSON list of its
// units) current, also over a stale one SuperEdge's site-manager left.
func TestSuperEdgeNodeView(t *testing.T) {
	cfg := testenv.StartEnvtest(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	linux := map[string]string{corev1.LabelOSStable: "linux"}
	for _, n := range []*corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "edge-1", Labels: map[string]string{corev1.LabelOSStable: "linux", "node-role.kubernetes.io/Edge": ""}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "cloud-1", Labels: linux}},
		// As SuperEdge's site-manager left it.
		{ObjectMeta: metav1.ObjectMeta{Name: "old-1", Labels: linux, Annotations: map[string]string{sitev1.AnnotationNodeUnits: `["unit-node-all","gone"]`}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "windows-1", Labels: map[string]string{corev1.LabelOSStable: "windows"}}},
	} {
		if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{FieldManager: "site-manager"}); err != nil {
			t.Fatal(err)
		}
	}
	c := testmanager.Start(t, cfg, manager.Options{DefaultUnits: []string{site.UnitNodeAll, site.UnitNodeEdge}})
	shop := &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "shop"}, Spec: sitev1.NodeUnitSpec{Nodes: []string{"edge-1"}}}
	if err := c.Create(ctx, shop); err != nil {
		t.Fatal(err)
	}

	for name, want := range map[string]sitev1.NodeUnitSpec{
		site.UnitNodeAll:  {Type: sitev1.OtherNodeUnit, Selector: &sitev1.Selector{MatchLabels: linux}},
		site.UnitNodeEdge: {Type: sitev1.EdgeNodeUnit, Selector: &sitev1.Selector{MatchLabels: map[string]string{"node-role.kubernetes.io/Edge": ""}}},
	} {
		testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
			u := &sitev1.NodeUnit{}
			if err := c.Get(ctx, types.NamespacedName{Name: name}, u); err != nil {
				return err
			}
			if d := cmp.Diff(want, u.Spec); d != "" {
				return fmt.Errorf("unit %s (-want +got):\n%s", name, d)
			}
			return nil
		})
	}
	if err := c.Get(ctx, types.NamespacedName{Name: site.UnitNodeCloud}, &sitev1.NodeUnit{}); err == nil {
		t.Errorf("%s was made without being asked for", site.UnitNodeCloud)
	}

	annotations := func(want map[string]string) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
			for name, list := range want {
				n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				got, ok := n.Annotations[sitev1.AnnotationNodeUnits]
				if list == "" && ok {
					return fmt.Errorf("node %s: %s=%s, want none", name, sitev1.AnnotationNodeUnits, got)
				}
				if got != list {
					return fmt.Errorf("node %s: %s=%q, want %q", name, sitev1.AnnotationNodeUnits, got, list)
				}
			}
			return nil
		})
	}
	annotations(map[string]string{
		"edge-1":    `["shop","unit-node-all","unit-node-edge"]`,
		"cloud-1":   `["unit-node-all"]`,
		"old-1":     `["unit-node-all"]`,
		"windows-1": "",
	})
	if err := c.Delete(ctx, shop); err != nil {
		t.Fatal(err)
	}
	annotations(map[string]string{"edge-1": `["unit-node-all","unit-node-edge"]`})
}
