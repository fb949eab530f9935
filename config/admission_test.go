package config_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/config"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestNodeSiteLabelPolicies installs config/admission into a real apiserver
// and acts as a node's own credential: it cannot move itself to another
// site, by any label that decides membership, on the Node or its status,
// nor delete its Node to register again; the kubelet's own label updates
// and status writes still pass, and an administrator may relabel.
func TestNodeSiteLabelPolicies(t *testing.T) {
	cfg := testenv.StartEnvtest(t)
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(cfg)
	admission, err := fs.Sub(config.Manifests, "admission")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.InstallManifests(ctx, cfg, admission); err != nil {
		t.Fatal(err)
	}
	// envtest authorizes with RBAC only: give nodes what the Node
	// authorizer would give them on their own Node (delete included, which
	// RBAC's system:node lacks).
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "test-nodes"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes", "nodes/status"}, Verbs: []string{"get", "patch", "update", "delete"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "test-nodes"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "test-nodes"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:nodes"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = sitev1.AddToScheme(c.Scheme())
	for _, g := range []*sitev1.NodeGroup{
		{ObjectMeta: metav1.ObjectMeta{Name: "lab"}, Spec: sitev1.NodeGroupSpec{AutoFindNodeKeys: []string{"sitegrid.io/site"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "zones"}, Spec: sitev1.NodeGroupSpec{AutoFindNodeKeys: []string{"topology.kubernetes.io/zone"}}},
	} {
		if err := c.Create(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{
		"sitegrid.io/site": "site-1", "lab": "lab-site-1", "kubernetes.io/hostname": "n1", "topology.kubernetes.io/zone": "z1",
	}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	asNode := rest.CopyConfig(cfg)
	asNode.Impersonate = rest.ImpersonationConfig{UserName: "system:node:n1", Groups: []string{"system:nodes", "system:authenticated"}}
	kubelet := kubernetes.NewForConfigOrDie(asNode)

	labelPatch := func(key string, value any) []byte {
		b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{key: value}}})
		return b
	}
	patch := func(cs kubernetes.Interface, body []byte, subresources ...string) error {
		_, err := cs.CoreV1().Nodes().Patch(ctx, "n1", types.MergePatchType, body, metav1.PatchOptions{}, subresources...)
		return err
	}
	// The policies take effect once the apiserver has loaded them and
	// resolved the NodeGroup kind.
	testenv.Eventually(t, 60*time.Second, func(context.Context) error {
		if err := patch(kubelet, labelPatch("topology.kubernetes.io/zone", "z2")); err == nil || !apierrors.IsForbidden(err) {
			_ = patch(admin, labelPatch("topology.kubernetes.io/zone", "z1"))
			return fmt.Errorf("node changed the label a group decides by: %v", err)
		}
		return nil
	})

	denied := []struct {
		name        string
		body        []byte
		subresource []string
		want        string
	}{
		{"its site label", labelPatch("sitegrid.io/site", "site-2"), nil, "may not change its own labels sitegrid.io/site"},
		{"its site label through status", labelPatch("sitegrid.io/site", "site-2"), []string{"status"}, "sitegrid.io/site"},
		{"removing its group label", labelPatch("lab", nil), nil, "may not change its own labels lab"},
		{"a new label a unit might select", labelPatch("shop", "berlin"), nil, "may not change its own labels shop"},
		{"a kubelet label a group decides by", labelPatch("topology.kubernetes.io/zone", "z2"), nil, "NodeGroup zones decides site membership"},
	}
	for _, tc := range denied {
		t.Run("denied: "+tc.name, func(t *testing.T) {
			err := patch(kubelet, tc.body, tc.subresource...)
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want 403 naming %q", err, tc.want)
			}
		})
	}
	t.Run("denied: deleting its own Node", func(t *testing.T) {
		err := kubelet.CoreV1().Nodes().Delete(ctx, "n1", metav1.DeleteOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "may not delete its own Node") {
			t.Fatalf("got %v, want 403", err)
		}
	})
	t.Run("allowed: the kubelet's own label and status", func(t *testing.T) {
		if err := patch(kubelet, labelPatch("kubernetes.io/hostname", "n1.local")); err != nil {
			t.Fatal(err)
		}
		if err := patch(kubelet, []byte(`{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady"}]}}`), "status"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("allowed: an administrator relabels", func(t *testing.T) {
		if err := patch(admin, labelPatch("sitegrid.io/site", "site-2")); err != nil {
			t.Fatal(err)
		}
	})
	n, err := admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"sitegrid.io/site": "site-2", "lab": "lab-site-1", "kubernetes.io/hostname": "n1.local", "topology.kubernetes.io/zone": "z1"}
	for k, v := range want {
		if n.Labels[k] != v {
			t.Errorf("label %s = %q, want %q (labels %v)", k, n.Labels[k], v, n.Labels)
		}
	}
	if _, ok := n.Labels["shop"]; ok {
		t.Errorf("the node's own label shop was stored")
	}
}
