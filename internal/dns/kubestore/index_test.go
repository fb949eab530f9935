package kubestore

import (
	"fmt"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/kubernetes"
	"github.com/coredns/coredns/plugin/kubernetes/object"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func TestMultiIndex(t *testing.T) {
	m := newMultiIndex[object.Service]()
	a, b, c := &object.Service{Name: "a"}, &object.Service{Name: "b"}, &object.Service{Name: "c"}
	names := func() string {
		var out []string
		for _, s := range m.get("10.0.0.1") {
			out = append(out, s.Name)
		}
		return fmt.Sprint(out)
	}
	for _, s := range []*object.Service{a, b, c} {
		m.add("10.0.0.1", s)
	}
	for _, step := range []struct {
		remove *object.Service
		want   string
	}{{nil, "[a b c]"}, {a, "[b c]"}, {c, "[b]"}, {b, "[]"}} {
		if step.remove != nil {
			m.remove("10.0.0.1", step.remove)
		}
		if got := names(); got != step.want {
			t.Fatalf("after removing %v: %s, want %s", step.remove, got, step.want)
		}
	}
	if len(m.first) != 0 || len(m.more) != 0 {
		t.Fatalf("an emptied key is still held: %v %v", m.first, m.more)
	}
}

func service(name, rv string, externalIPs ...string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", ResourceVersion: rv},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1" + rv, ClusterIPs: []string{"10.96.0.1" + rv}, ExternalIPs: externalIPs,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
}

// A relist replaces the resource's objects: what is gone is dropped from
// every index, an object of the same version is kept, and the SOA serials
// move only for changes to records.
func TestReplace(t *testing.T) {
	s := New(nil, true)
	f := s.serviceFeed()
	if err := f.Replace([]any{service("web", "1"), service("lb", "1", "198.18.9.9")}, "1"); err != nil {
		t.Fatal(err)
	}
	if !s.synced[servicesSynced].Load() || len(s.ServiceList()) != 2 || len(s.SvcExtIndexReverse("198.18.9.9")) != 1 {
		t.Fatalf("after the first list: synced %v, %d Services", s.synced[servicesSynced].Load(), len(s.ServiceList()))
	}
	s.modified.Store(0)
	s.extModified.Store(0)
	// The same objects again: nothing changed.
	if err := f.Replace([]any{service("web", "1"), service("lb", "1", "198.18.9.9")}, "2"); err != nil {
		t.Fatal(err)
	}
	if s.Modified(kubernetes.ModifiedInternal) != 0 || s.Modified(kubernetes.ModifiedExternal) != 0 {
		t.Fatal("a relist of the same objects moved the serials")
	}
	// lb went while the watch was down.
	if err := f.Replace([]any{service("web", "1")}, "3"); err != nil {
		t.Fatal(err)
	}
	if len(s.ServiceList()) != 1 || s.SvcIndex("lb.shop") != nil || s.SvcExtIndexReverse("198.18.9.9") != nil || s.SvcIndexReverse("10.96.0.11") == nil {
		t.Fatalf("after lb went: %d Services, lb %v", len(s.ServiceList()), s.SvcIndex("lb.shop"))
	}
	if s.Modified(kubernetes.ModifiedInternal) == 0 || s.Modified(kubernetes.ModifiedExternal) == 0 {
		t.Fatal("dropping a Service with an external IP did not move both serials")
	}
	// Delete, as the watch hands it: the API object.
	if err := f.Delete(service("web", "4")); err != nil {
		t.Fatal(err)
	}
	if len(s.ServiceList()) != 0 || s.SvcIndexReverse("10.96.0.11") != nil {
		t.Fatal("a deleted Service is still answered")
	}
}

// Stop returns once Run has: its reflectors (here retrying an apiserver
// that is not there) are gone.
func TestStopWaitsForRun(t *testing.T) {
	s := New(clientset.NewForConfigOrDie(&rest.Config{Host: "https://127.0.0.1:1"}), true)
	ran := make(chan struct{})
	go func() { s.Run(); close(ran) }()
	for !s.running.Load() {
		time.Sleep(time.Millisecond)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	default:
		t.Fatal("Stop returned while Run was still running")
	}
	<-ran
	if err := s.Stop(); err != nil {
		t.Fatal("a second Stop:", err)
	}
}
