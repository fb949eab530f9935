package proxy_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// BenchmarkGet compares a GET of the node directly against the apiserver
// and through the hub (online, so forwarded and stored): the kubelet's
// (JSON upstream, impersonated) and a protobuf token client's (passed
// through).
func BenchmarkGet(b *testing.B) {
	store := openStore(b)
	f := startHub(b, store)
	client := func(host string) kubernetes.Interface {
		return f.certClient("system:node:"+node, []string{"system:nodes"}, func(c *rest.Config) { c.Host, c.QPS = host, -1 })
	}
	token := f.readerToken()
	for _, tc := range []struct {
		name string
		cs   kubernetes.Interface
	}{{"kubelet direct", client(f.cp.Endpoint)}, {"kubelet through hub", client(f.hubURL)},
		{"protobuf token direct", f.clientOf(f.cp.Endpoint, token, true)}, {"protobuf token through hub", f.clientOf(f.hubURL, token, true)}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			for i := 0; i < b.N; i++ {
				if _, err := tc.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOfflineList measures LISTs of 2,000 pods answered from the cache
// while the uplink is cut.
func BenchmarkOfflineList(b *testing.B) {
	store := openStore(b)
	f := startHub(b, store)
	ctx := context.Background()
	createPods(b, f, 2000)
	kubelet := f.certClient("system:node:"+node, []string{"system:nodes"}, func(c *rest.Config) { c.QPS = -1 })
	onNode := metav1.ListOptions{FieldSelector: "spec.nodeName=" + node}
	if _, err := kubelet.CoreV1().Pods("").List(ctx, onNode); err != nil {
		b.Fatal(err)
	}
	f.uplink.Cut()
	for {
		if _, ok := f.tracker.Online(); !ok {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		list, err := kubelet.CoreV1().Pods("").List(ctx, onNode)
		if err != nil || len(list.Items) != 2000 {
			b.Fatalf("offline list: %d pods, %v", len(list.Items), err)
		}
	}
}

// TestFirstAnswerAfterCloudLoss measures the time from cutting the uplink
// to the first answer served from the cache: the request that finds the
// cloud gone is itself answered from the cache.
func TestFirstAnswerAfterCloudLoss(t *testing.T) {
	store := openStore(t)
	f := startHub(t, store)
	kubelet := f.certClient("system:node:"+node, []string{"system:nodes"}, nil)
	ctx := context.Background()
	if _, err := kubelet.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	f.uplink.Cut()
	cut := time.Now()
	if _, err := kubelet.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil {
		t.Fatalf("first request after the cut: %v", err)
	}
	t.Logf("first answer %s after the uplink was cut", time.Since(cut).Round(time.Microsecond))
}

// BenchmarkList compares a protobuf LIST of 200 pods (a ServiceAccount
// token client, as kube-proxy) directly against the apiserver and through
// the hub (online: passed through and kept).
func BenchmarkList(b *testing.B) {
	store := openStore(b)
	f := startHub(b, store)
	ctx := context.Background()
	createPods(b, f, 200)
	token := f.readerToken()
	for _, tc := range []struct {
		name string
		cs   kubernetes.Interface
	}{{"direct", f.clientOf(f.cp.Endpoint, token, true)}, {"through hub", f.clientOf(f.hubURL, token, true)}} {
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if l, err := tc.cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 200 {
					b.Fatalf("%d pods, %v", len(l.Items), err)
				}
			}
		})
	}
}

// createPods creates n pods on the hub's node in namespace default.
func createPods(b *testing.B, f *hubFixture, n int) {
	b.Helper()
	for range n {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "app-", Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
		if _, err := f.admin.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
