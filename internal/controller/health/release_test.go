package health

import (
	"context"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/sitegrid/sitegrid/internal/health"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestReleaserMarksPodsOfADeadNode, against a real apiserver: a NotReady
// node its unit says is alive keeps its Ready pod; once the unit judges it
// dead, the pod is marked not ready. A Ready node's pod and a NotReady node
// no unit reports on are left alone.
func TestReleaserMarksPodsOfADeadNode(t *testing.T) {
	cfg := testenv.StartEnvtest(t)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme(t), Metrics: metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0", Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := mgr.GetFieldIndexer().IndexField(ctx, &coordinationv1.Lease{}, MemberIndex, IndexMembers); err != nil {
		t.Fatal(err)
	}
	guard := &Guard{Client: mgr.GetClient(), Clock: clock.RealClock{}}
	if err := (&Releaser{Guard: guard, Client: mgr.GetClient(), Pods: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()
	c, err := client.New(cfg, client.Options{Scheme: scheme(t)})
	if err != nil {
		t.Fatal(err)
	}

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: health.Namespace}}))
	node := func(name string, ready corev1.ConditionStatus) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		must(c.Create(ctx, n))
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, LastTransitionTime: metav1.Now(), LastHeartbeatTime: metav1.Now()}}
		must(c.Status().Update(ctx, n))
	}
	pod := func(name, node string) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		must(c.Create(ctx, p))
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		must(c.Status().Update(ctx, p))
	}
	node("edge-1", corev1.ConditionUnknown) // cut off from the cloud
	node("edge-2", corev1.ConditionTrue)
	node("lonely", corev1.ConditionUnknown) // in no unit
	pod("on-edge-1", "edge-1")
	pod("on-edge-2", "edge-2")
	pod("on-lonely", "lonely")
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "site-a", Namespace: health.Namespace}}
	report := func(v health.Verdict) {
		r := &health.Report{Unit: "site-a", Reporter: "edge-2", Time: time.Now().UTC(), Members: []string{"edge-1", "edge-2"},
			Verdicts: map[string]health.Verdict{"edge-1": v, "edge-2": health.Alive}}
		raw, err := r.Annotation()
		must(err)
		lease.Annotations = map[string]string{health.ReportAnnotation: raw}
		lease.Spec = coordinationv1.LeaseSpec{HolderIdentity: ptr.To("edge-2"), LeaseDurationSeconds: ptr.To[int32](60), RenewTime: ptr.To(metav1.NewMicroTime(time.Now()))}
		if lease.ResourceVersion == "" {
			must(c.Create(ctx, lease))
		} else {
			must(c.Update(ctx, lease))
		}
	}
	ready := func(name string) (corev1.ConditionStatus, string) {
		p := &corev1.Pod{}
		must(c.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, p))
		if cond := readyCondition(p); cond != nil {
			return cond.Status, cond.Message
		}
		return "", ""
	}

	report(health.Alive)
	// The alive node is decided (and kept) as soon as the controller runs;
	// give it time to do the wrong thing.
	time.Sleep(3 * time.Second)
	if s, _ := ready("on-edge-1"); s != corev1.ConditionTrue {
		t.Fatalf("a pod of a node its unit says is alive: Ready %s", s)
	}

	report(health.Dead)
	testenv.Eventually(t, 30*time.Second, func(context.Context) error {
		if s, msg := ready("on-edge-1"); s != corev1.ConditionFalse {
			return fmt.Errorf("pod of the dead node: Ready %s (%s)", s, msg)
		}
		return nil
	})
	if _, msg := ready("on-edge-1"); msg != "sitegrid: unit site-a judges it dead" {
		t.Errorf("message %q", msg)
	}
	for _, p := range []string{"on-edge-2", "on-lonely"} {
		if s, _ := ready(p); s != corev1.ConditionTrue {
			t.Errorf("%s: Ready %s, want it left alone", p, s)
		}
	}
}
