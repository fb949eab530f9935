package manager

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/internal/controller/site"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestNodeCacheKeepsWhatControllersRead runs the manager against a real
// apiserver with a node as a kubelet reports it: the manager's cache holds
// the node without its images, node info, capacity and status managed
// fields, with its conditions, addresses, taints and labels, and the site
// controllers still put a group's label on it and take it off again.
func TestNodeCacheKeepsWhatControllersRead(t *testing.T) {
	cfg := testenv.StartEnvtest(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-1-a", Labels: map[string]string{"shop": "1"}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "edge", Effect: corev1.TaintEffectNoSchedule}}},
	}
	created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status = kubeletStatus()
	reported, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{FieldManager: "kubelet"})
	if err != nil {
		t.Fatal(err)
	}

	mgr, err := New(cfg, Options{MetricsAddr: "0", ProbeAddr: "0", SkipControllerNameValidation: true})
	if err != nil {
		t.Fatal(err)
	}
	stop, done := run(mgr)
	defer func() { stop(); <-done }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}

	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &sitev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: "shops"}, Spec: sitev1.NodeGroupSpec{AutoFindNodeKeys: []string{"shop"}}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		n, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if n.Labels["shops"] == "" {
			return errors.New("the group's label is not on the node")
		}
		return nil
	})

	var cached corev1.Node
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		if err := mgr.GetCache().Get(ctx, types.NamespacedName{Name: node.Name}, &cached); err != nil {
			return err
		}
		if cached.Labels["shops"] == "" {
			return errors.New("the cache has not seen the label yet")
		}
		return nil
	})
	want := reported.Status
	if d := cmp.Diff(corev1.NodeStatus{Conditions: want.Conditions, Addresses: want.Addresses}, cached.Status); d != "" {
		t.Errorf("cached node status (-want +got):\n%s", d)
	}
	if d := cmp.Diff(reported.Spec.Taints, cached.Spec.Taints); d != "" {
		t.Errorf("cached taints (-want +got):\n%s", d)
	}
	for _, m := range cached.ManagedFields {
		if m.Subresource != "" {
			t.Errorf("the cache keeps the managed fields of %s's %s writes", m.Manager, m.Subresource)
		}
	}
	if !hasManager(cached.ManagedFields, site.FieldManager) {
		t.Errorf("the cache lost sitegrid's own managed fields: %v", managers(cached.ManagedFields))
	}
	// The real node keeps everything the kubelet wrote.
	real, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(real.Status.Images) != len(want.Images) || real.Status.NodeInfo.KubeletVersion != want.NodeInfo.KubeletVersion {
		t.Errorf("the node itself lost its status: %d images, kubelet %q", len(real.Status.Images), real.Status.NodeInfo.KubeletVersion)
	}

	// Leaving the group's key: the label goes, decided from the cached node.
	if _, err := cs.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, []byte(`{"metadata":{"labels":{"shop":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		n, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if v, ok := n.Labels["shops"]; ok {
			return fmt.Errorf("the group's label is still on the node: %q", v)
		}
		return nil
	})
}

// kubeletStatus is a node's status as a kubelet reports it.
func kubeletStatus() corev1.NodeStatus {
	now := metav1.NewTime(time.Now())
	images := make([]corev1.ContainerImage, 20)
	for i := range images {
		images[i] = corev1.ContainerImage{Names: []string{fmt.Sprintf("registry.example/app-%d@sha256:%064d", i, i), fmt.Sprintf("registry.example/app-%d:v1", i)}, SizeBytes: 50 << 20}
	}
	return corev1.NodeStatus{
		Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")},
		Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("7Gi")},
		Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
		},
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.10"}, {Type: corev1.NodeHostName, Address: "shop-1-a"}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
		NodeInfo:        corev1.NodeSystemInfo{KubeletVersion: "v1.37.1", OSImage: "Debian GNU/Linux 13", ContainerRuntimeVersion: "containerd://2.1.4", Architecture: "amd64", OperatingSystem: "linux"},
		Images:          images,
	}
}

func hasManager(m []metav1.ManagedFieldsEntry, name string) bool {
	for _, e := range m {
		if e.Manager == name {
			return true
		}
	}
	return false
}

func managers(m []metav1.ManagedFieldsEntry) []string {
	out := make([]string, 0, len(m))
	for _, e := range m {
		out = append(out, e.Manager+"/"+e.Subresource)
	}
	return out
}
