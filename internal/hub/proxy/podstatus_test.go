package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/kubernetes"

	"github.com/sitegrid/sitegrid/internal/testenv"
)

// kubeletPatchStatus patches a pod's status as the kubelet's status manager
// does: it reads the pod, and sends the two-way strategic patch of UID and
// status from what it read to next.
func kubeletPatchStatus(ctx context.Context, kubelet kubernetes.Interface, name string, change func(*corev1.PodStatus)) (*corev1.Pod, error) {
	pod, err := kubelet.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	next := pod.Status.DeepCopy()
	change(next)
	old, err := json.Marshal(corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: pod.UID}, Status: pod.Status})
	if err != nil {
		return nil, err
	}
	now, err := json.Marshal(corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: pod.UID}, Status: *next})
	if err != nil {
		return nil, err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(old, now, corev1.Pod{})
	if err != nil {
		return nil, err
	}
	return kubelet.CoreV1().Pods("default").Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
}

// TestKubeletPodStatusOffline: a kubelet that restarts its pods without the
// cloud reports their new status; the hub answers from the pod it cached,
// the kubelet reads its status back, and the status reaches the cloud once
// it is back, written as the kubelet. A restarted kubelet's registration is
// answered too: its Node exists.
func TestKubeletPodStatusOffline(t *testing.T) {
	f := startHub(t, openStore(t))
	ctx := context.Background()
	f.newPod("app")
	// kwok, the node's simulated kubelet, starts the pod first; this test's
	// kubelet takes over from the status kwok wrote.
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		p, err := f.admin.CoreV1().Pods("default").Get(ctx, "app", metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return fmt.Errorf("pod not running yet (%v)", err)
		}
		return nil
	})
	kubelet := f.certClient("system:node:"+node, []string{"system:nodes"}, nil)
	running := func(ip string, restarts int32) func(*corev1.PodStatus) {
		return func(s *corev1.PodStatus) {
			s.Phase, s.PodIP, s.PodIPs = corev1.PodRunning, ip, []corev1.PodIP{{IP: ip}}
			s.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
			s.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Image: "app:1", ImageID: "sha256:1", Ready: true, RestartCount: restarts,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}}
		}
	}
	if _, err := kubeletPatchStatus(ctx, kubelet, "app", running("198.19.1.2", 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := kubelet.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}

	f.uplink.Cut()
	f.waitOffline()
	// The kubelet starts again and registers its node: it exists.
	_, err := kubelet.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		t.Errorf("the kubelet's registration offline: %v, want AlreadyExists", err)
	}
	// Its pod restarted, in a new sandbox.
	answered, err := kubeletPatchStatus(ctx, kubelet, "app", running("198.19.1.7", 1))
	if err != nil {
		t.Fatalf("pod status patch offline: %v", err)
	}
	if answered.Status.PodIP != "198.19.1.7" || answered.Status.ContainerStatuses[0].RestartCount != 1 || answered.Spec.NodeName != node {
		t.Errorf("offline answer: %+v", answered.Status)
	}
	if back, err := kubelet.CoreV1().Pods("default").Get(ctx, "app", metav1.GetOptions{}); err != nil || back.Status.PodIP != "198.19.1.7" {
		t.Errorf("the kubelet reads back %v (%v), want its offline status", back.Status.PodIP, err)
	}
	// A patch the apiserver would refuse is refused.
	bad := []byte(`{"status":{"conditions":"ready"}}`)
	if _, err := kubelet.CoreV1().Pods("default").Patch(ctx, "app", types.StrategicMergePatchType, bad, metav1.PatchOptions{}, "status"); !apierrors.IsInvalid(err) {
		t.Errorf("a malformed status patch offline: %v, want Invalid", err)
	}
	if cloud, err := f.admin.CoreV1().Pods("default").Get(ctx, "app", metav1.GetOptions{}); err != nil || cloud.Status.PodIP != "198.19.1.2" {
		t.Fatalf("the cloud, cut off, has %v (%v)", cloud.Status.PodIP, err)
	}

	f.uplink.Heal()
	testenv.Eventually(t, 20*time.Second, func(ctx context.Context) error {
		cloud, err := f.admin.CoreV1().Pods("default").Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cloud.Status.PodIP != "198.19.1.7" || len(cloud.Status.ContainerStatuses) != 1 || cloud.Status.ContainerStatuses[0].RestartCount != 1 {
			return fmt.Errorf("the cloud has pod IP %s, statuses %v", cloud.Status.PodIP, cloud.Status.ContainerStatuses)
		}
		return nil
	})
	// And the kubelet's next delta applies on top of it.
	if _, err := kubeletPatchStatus(ctx, kubelet, "app", func(s *corev1.PodStatus) { s.Conditions[0].Status = corev1.ConditionFalse }); err != nil {
		t.Fatal(err)
	}
	cloud, err := f.admin.CoreV1().Pods("default").Get(ctx, "app", metav1.GetOptions{})
	if err != nil || cloud.Status.PodIP != "198.19.1.7" || cloud.Status.Conditions[0].Status != corev1.ConditionFalse {
		t.Errorf("after the kubelet's next patch the cloud has %v (%v)", cloud.Status, err)
	}
}
