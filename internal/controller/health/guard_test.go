package health

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/internal/health"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func scheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := sitev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func notReadyNode(name string, since time.Duration, annotations map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionUnknown, LastTransitionTime: metav1.NewTime(now.Add(-since)),
	}}}}
}

func unitLease(unit string, renewed time.Duration, verdicts map[string]health.Verdict) *coordinationv1.Lease {
	r := &health.Report{Unit: unit, Reporter: "a", Verdicts: verdicts}
	for n := range verdicts {
		r.Members = append(r.Members, n)
	}
	raw, _ := r.Annotation()
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: unit, Namespace: health.Namespace, Annotations: map[string]string{health.ReportAnnotation: raw}},
		Spec:       coordinationv1.LeaseSpec{RenewTime: ptr.To(metav1.NewMicroTime(now.Add(-renewed))), LeaseDurationSeconds: ptr.To[int32](30)},
	}
}

func TestDecide(t *testing.T) {
	verdicts := map[string]health.Verdict{"a": health.Alive, "b": health.Alive, "c": health.Dead, "d": health.Unknown}
	cases := []struct {
		name    string
		objs    []client.Object
		node    string
		keep    bool
		because string
	}{
		{"alive by its unit", []client.Object{notReadyNode("b", time.Minute, nil), unitLease("u", time.Second, verdicts)}, "b", true, "says it is alive"},
		{"dead by its unit", []client.Object{notReadyNode("c", time.Minute, nil), unitLease("u", time.Second, verdicts)}, "c", false, "judges it dead"},
		{"unit cannot tell", []client.Object{notReadyNode("d", time.Minute, nil), unitLease("u", time.Second, verdicts)}, "d", true, "cannot tell"},
		{"whole unit unreachable: a dead verdict is stale too", []client.Object{notReadyNode("c", time.Minute, nil), unitLease("u", time.Minute, verdicts)}, "c", true, "report is stale"},
		{"not in any unit's report", []client.Object{notReadyNode("z", time.Minute, nil), unitLease("u", time.Second, verdicts)}, "z", false, "no unit reports"},
		{"node opted out", []client.Object{notReadyNode("b", time.Minute, map[string]string{health.AutonomyAnnotation: "false"}), unitLease("u", time.Second, verdicts)}, "b", false, "node opted out"},
		{"unit opted out", []client.Object{notReadyNode("b", time.Minute, nil), unitLease("u", time.Second, verdicts),
			&sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "u", Annotations: map[string]string{health.AutonomyAnnotation: "false"}}}}, "b", false, "unit opted out"},
		{"longer than the default maximum", []client.Object{notReadyNode("b", 2*time.Hour, nil), unitLease("u", time.Second, verdicts)}, "b", false, "maximum autonomy 1h0m0s"},
		{"the unit allows longer", []client.Object{notReadyNode("b", 2*time.Hour, nil), unitLease("u", time.Second, verdicts),
			&sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "u", Annotations: map[string]string{health.MaxAutonomyAnnotation: "3h"}}}}, "b", true, "alive"},
		{"the node's own maximum wins", []client.Object{notReadyNode("b", 2*time.Hour, map[string]string{health.MaxAutonomyAnnotation: "90m"}), unitLease("u", time.Second, verdicts),
			&sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: "u", Annotations: map[string]string{health.MaxAutonomyAnnotation: "3h"}}}}, "b", false, "maximum autonomy 1h30m0s"},
		{"no such node", nil, "gone", false, "not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := &Guard{Client: fake.NewClientBuilder().WithScheme(scheme(t)).WithIndex(&coordinationv1.Lease{}, MemberIndex, IndexMembers).WithObjects(c.objs...).Build(), Clock: clocktesting.NewFakePassiveClock(now), MaxAutonomy: time.Hour}
			d, err := g.Decide(context.Background(), c.node)
			if err != nil {
				t.Fatal(err)
			}
			if d.Keep != c.keep || !strings.Contains(d.Reason, c.because) {
				t.Errorf("keep=%v (%s), want keep=%v because %q", d.Keep, d.Reason, c.keep, c.because)
			}
		})
	}
}

func review(t *testing.T, kind, sub string, old, obj any) admission.Request {
	t.Helper()
	o, _ := json.Marshal(obj)
	p, _ := json.Marshal(old)
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Kind: metav1.GroupVersionKind{Version: "v1", Kind: kind}, SubResource: sub, Operation: admissionv1.Update,
		Object: runtime.RawExtension{Raw: o}, OldObject: runtime.RawExtension{Raw: p},
	}}
}

func TestWebhook(t *testing.T) {
	verdicts := map[string]health.Verdict{"a": health.Alive, "c": health.Dead}
	g := &Guard{Client: fake.NewClientBuilder().WithScheme(scheme(t)).WithIndex(&coordinationv1.Lease{}, MemberIndex, IndexMembers).WithObjects(
		notReadyNode("a", time.Minute, nil), notReadyNode("c", time.Minute, nil), unitLease("u", time.Second, verdicts)).Build(),
		Clock: clocktesting.NewFakePassiveClock(now)}
	w := &Webhook{Guard: g, Decoder: admission.NewDecoder(scheme(t))}
	ctx := context.Background()

	taint := func(n *corev1.Node, taints ...corev1.Taint) *corev1.Node {
		n = n.DeepCopy()
		n.Spec.Taints = taints
		return n
	}
	noSchedule := corev1.Taint{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoSchedule}
	noExecute := corev1.Taint{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute}
	// The lifecycle controller taints an alive node: NoExecute is dropped,
	// NoSchedule stays.
	a := notReadyNode("a", time.Minute, nil)
	resp := w.Handle(ctx, review(t, "Node", "", taint(a, noSchedule), taint(a, noSchedule, noExecute)))
	if !resp.Allowed || len(resp.Patches) != 1 || resp.Patches[0].Operation != "remove" || resp.Patches[0].Path != "/spec/taints/1" {
		t.Errorf("alive node: allowed %v, patches %+v", resp.Allowed, resp.Patches)
	}
	// A dead node keeps its taint.
	c := notReadyNode("c", time.Minute, nil)
	if resp := w.Handle(ctx, review(t, "Node", "", c, taint(c, noExecute))); !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("dead node: allowed %v, patches %+v", resp.Allowed, resp.Patches)
	}
	// Other node updates pass unchanged.
	if resp := w.Handle(ctx, review(t, "Node", "", a, taint(a, noSchedule))); !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("a NoSchedule taint: allowed %v, patches %+v", resp.Allowed, resp.Patches)
	}

	pod := func(node string, ready corev1.ConditionStatus) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}, Spec: corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}}}
	}
	resp = w.Handle(ctx, review(t, "Pod", "status", pod("a", corev1.ConditionTrue), pod("a", corev1.ConditionFalse)))
	if !resp.Allowed || len(resp.Patches) != 1 || resp.Patches[0].Value != string(corev1.ConditionTrue) {
		t.Errorf("pod on an alive node: allowed %v, patches %+v", resp.Allowed, resp.Patches)
	}
	if resp := w.Handle(ctx, review(t, "Pod", "status", pod("c", corev1.ConditionTrue), pod("c", corev1.ConditionFalse))); !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("pod on a dead node: allowed %v, patches %+v", resp.Allowed, resp.Patches)
	}
	if resp := w.Handle(ctx, review(t, "Pod", "status", pod("a", corev1.ConditionFalse), pod("a", corev1.ConditionTrue))); !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("a pod becoming ready: allowed %v, patches %+v", resp.Allowed, resp.Patches)
	}
	// Garbage is refused with a clear error, never mangled.
	bad := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Node"},
		Object: runtime.RawExtension{Raw: []byte("{")}, OldObject: runtime.RawExtension{Raw: []byte("{}")}}}
	if resp := w.Handle(ctx, bad); resp.Allowed || resp.Result == nil || resp.Result.Code != 400 {
		t.Errorf("a broken object: %+v", resp.Result)
	}
}

// TestWebhookManifest: the installed registration is the one the code
// builds.
func TestWebhookManifest(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "config", "health-webhook", "webhook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(data, got); err != nil {
		t.Fatal(err)
	}
	want := WebhookConfiguration(admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
		Namespace: "sitegrid-system", Name: "sitegrid-webhook", Path: ptr.To(WebhookPath), Port: ptr.To[int32](443)}}, DefaultNodeControllerUsers)
	if !reflect.DeepEqual(got.Webhooks, want.Webhooks) || got.Name != want.Name {
		t.Errorf("config/health-webhook/webhook.yaml differs from WebhookConfiguration:\n%+v\nwant\n%+v", got.Webhooks, want.Webhooks)
	}

	data, err = os.ReadFile(filepath.Join("..", "..", "..", "config", "health-webhook", "reports-webhook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	gotReports := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(data, gotReports); err != nil {
		t.Fatal(err)
	}
	wantReports := ReportsWebhookConfiguration(admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
		Namespace: "sitegrid-system", Name: "sitegrid-webhook", Path: ptr.To(ReportsWebhookPath), Port: ptr.To[int32](443)}})
	if !reflect.DeepEqual(gotReports.Webhooks, wantReports.Webhooks) || gotReports.Name != wantReports.Name {
		t.Errorf("config/health-webhook/reports-webhook.yaml differs from ReportsWebhookConfiguration:\n%+v\nwant\n%+v", gotReports.Webhooks, wantReports.Webhooks)
	}
}
