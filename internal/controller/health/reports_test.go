package health

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/internal/health"
)

// TestReportValidator: a hub writes its own unit's report and nothing else.
func TestReportValidator(t *testing.T) {
	node := func(name, unit string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"shops": unit, "zone": "all"}}}
	}
	v := &ReportValidator{Client: fake.NewClientBuilder().WithScheme(scheme(t)).WithObjects(
		&sitev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: "shops"}},
		node("a1", "shop-a"), node("a2", "shop-a"), node("b1", "shop-b"), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "loner"}},
	).Build(), Decoder: admission.NewDecoder(scheme(t))}

	type lease struct {
		name, unit, reporter, holder string
		members                      []string
		verdicts                     map[string]health.Verdict
		noReport                     bool
	}
	request := func(user string, l lease) admission.Request {
		obj := &coordinationv1.Lease{TypeMeta: metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
			ObjectMeta: metav1.ObjectMeta{Name: l.name, Namespace: health.Namespace}}
		if l.holder != "" {
			obj.Spec.HolderIdentity = ptr.To(l.holder)
		}
		if !l.noReport {
			r := &health.Report{Unit: l.unit, Reporter: l.reporter, Members: l.members, Verdicts: l.verdicts}
			raw, err := r.Annotation()
			if err != nil {
				t.Fatal(err)
			}
			obj.Annotations = map[string]string{health.ReportAnnotation: raw}
		}
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			Kind: metav1.GroupVersionKind{Group: "coordination.k8s.io", Version: "v1", Kind: "Lease"}, Operation: admissionv1.Create,
			Namespace: health.Namespace, Name: l.name, UserInfo: authenticationv1.UserInfo{Username: user}, Object: runtime.RawExtension{Raw: b}}}
	}
	own := lease{name: "shop-a", unit: "shop-a", reporter: "a1", holder: "a1", members: []string{"a1", "a2"},
		verdicts: map[string]health.Verdict{"a1": health.Alive, "a2": health.Dead}}
	with := func(change func(*lease)) lease {
		l := own
		l.members = append([]string(nil), own.members...)
		change(&l)
		return l
	}
	for _, c := range []struct {
		name    string
		user    string
		lease   lease
		allowed bool
		because string
	}{
		{"its own unit's report", "sitegrid-hub:a1", own, true, ""},
		{"not a hub", "system:admin", lease{name: "anything", noReport: true}, true, ""},
		{"another unit's Lease", "sitegrid-hub:b1", with(func(l *lease) { l.reporter, l.holder = "b1", "b1" }), false, "node b1 is in no unit shop-a"},
		{"a report it does not publish", "sitegrid-hub:a2", own, false, "says a1 publishes it"},
		{"a Lease someone else holds", "sitegrid-hub:a1", with(func(l *lease) { l.holder = "a2" }), false, "held by a2"},
		{"a Lease not named after its unit", "sitegrid-hub:a1", with(func(l *lease) { l.name = "shop-b" }), false, "holds a report of unit shop-a"},
		{"a member from another unit", "sitegrid-hub:a1", with(func(l *lease) { l.members = append(l.members, "b1") }), false, "member b1 of the report is not in unit shop-a"},
		{"a member without a unit", "sitegrid-hub:a1", with(func(l *lease) { l.members = append(l.members, "loner") }), false, "member loner"},
		{"a member that does not exist", "sitegrid-hub:a1", with(func(l *lease) { l.members = append(l.members, "ghost") }), false, "member ghost of the report has no Node"},
		{"a verdict on a non-member", "sitegrid-hub:a1", with(func(l *lease) { l.verdicts = map[string]health.Verdict{"b1": health.Alive} }), false, "does not list as a member"},
		{"a unit that is no NodeGroup's", "sitegrid-hub:a1", with(func(l *lease) { l.name, l.unit = "all", "all" }), false, "in no unit all of a NodeGroup"},
		{"no report", "sitegrid-hub:a1", lease{name: "shop-a", noReport: true}, false, "may write unit reports only"},
		{"a hub without a Node", "sitegrid-hub:ghost", with(func(l *lease) { l.reporter, l.holder = "ghost", "ghost" }), false, "has no Node"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := v.Handle(context.Background(), request(c.user, c.lease))
			if resp.Allowed != c.allowed {
				t.Fatalf("allowed %v, want %v: %v", resp.Allowed, c.allowed, resp.Result)
			}
			if !c.allowed && !strings.Contains(resp.Result.Message, c.because) {
				t.Errorf("denied with %q, want it to say %q", resp.Result.Message, c.because)
			}
		})
	}
}
