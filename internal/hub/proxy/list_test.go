package proxy

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestItemOfDropsManagedFields: what the cache keeps of an object is the
// object without metadata.managedFields, everything else as it was.
func TestItemOfDropsManagedFields(t *testing.T) {
	in := []byte(`{"kind":"Pod","metadata":{"name":"app","namespace":"shop","resourceVersion":"7","labels":{"a":"b"},` +
		`"managedFields":[{"manager":"kubectl","operation":"Apply","fieldsV1":{"f:spec":{}}}]},"spec":{"nodeName":"a-1"}}`)
	it, meta, err := itemOf(in)
	if err != nil {
		t.Fatal(err)
	}
	if it.Namespace != "shop" || it.Name != "app" || meta.ResourceVersion != "7" {
		t.Errorf("item %s/%s at %q", it.Namespace, it.Name, meta.ResourceVersion)
	}
	var got, want map[string]any
	if err := json.Unmarshal(it.Raw, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(`{"kind":"Pod","metadata":{"name":"app","namespace":"shop","resourceVersion":"7","labels":{"a":"b"}},"spec":{"nodeName":"a-1"}}`), &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cached object (-want +got):\n%s", diff)
	}
	plain := []byte(`{"kind":"Pod","metadata":{"name":"app"}}`)
	if it, _, err := itemOf(plain); err != nil || string(it.Raw) != string(plain) {
		t.Errorf("an object without managedFields changed: %s, %v", it.Raw, err)
	}
}

// TestMemoryReleaser: small lists release nothing; a run of large lists
// releases once, after the last.
func TestMemoryReleaser(t *testing.T) {
	var released atomic.Int32
	m := memoryReleaser{release: func() { released.Add(1) }, after: time.Second}
	m.releaseAfterLargeList(largeList - 1)
	for range 5 {
		m.releaseAfterLargeList(largeList)
		time.Sleep(20 * time.Millisecond)
	}
	if n := released.Load(); n != 0 {
		t.Fatalf("released %d times while lists kept coming", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for released.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // a second release would come by now
	if n := released.Load(); n != 1 {
		t.Errorf("released %d times after the lists, want 1", n)
	}
}

// TestCheckNode: a node as the apiserver writes it passes; a patched node
// whose fields the kubelet writes have the wrong type does not.
func TestCheckNode(t *testing.T) {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1", Labels: map[string]string{"a": "b"}},
		Spec: corev1.NodeSpec{PodCIDRs: []string{"198.19.1.0/24"}, Taints: []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule, TimeAdded: &metav1.Time{Time: time.Now()}}}},
		Status: corev1.NodeStatus{
			Capacity:        corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")},
			Conditions:      []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}},
			Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.1.1"}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo:        corev1.NodeSystemInfo{KubeletVersion: "v1.37.1"},
			Images:          []corev1.ContainerImage{{Names: []string{"app"}, SizeBytes: 1 << 30}},
			VolumesAttached: []corev1.AttachedVolume{{Name: "v", DevicePath: "/dev/v"}},
		}}
	good, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkNode(good); err != nil {
		t.Errorf("a real node refused: %v", err)
	}
	for _, bad := range []string{
		`{"status":{"conditions":"Ready"}}`,
		`{"status":{"conditions":[{"type":"Ready","lastHeartbeatTime":"yesterday"}]}}`,
		`{"status":{"capacity":{"cpu":"four"}}}`,
		`{"status":{"daemonEndpoints":{"kubeletEndpoint":{"Port":"10250"}}}}`,
		`{"spec":{"taints":[{"key":1}]}}`,
		`{"metadata":{"labels":["a"]}}`,
	} {
		if checkNode([]byte(bad)) == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}
