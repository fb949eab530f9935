package health

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/internal/health"
	"github.com/sitegrid/sitegrid/internal/rbac/hubrbac"
)

// ReportsWebhookPath is where the manager serves the reports webhook.
const ReportsWebhookPath = "/sitegrid/health/validate-report"

// ReportsWebhookName names the ValidatingWebhookConfiguration.
const ReportsWebhookName = "sitegrid-health-reports"

// ReportsWebhookConfiguration is the registration of the reports webhook:
// creates and updates of Leases in the health namespace by hub
// credentials. It fails closed: a report nobody checked is not written (the
// unit's report then goes stale, which keeps its nodes: see Guard).
func ReportsWebhookConfiguration(cc admissionregistrationv1.WebhookClientConfig) *admissionregistrationv1.ValidatingWebhookConfiguration {
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: ReportsWebhookName},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "reports.health.sitegrid.io",
			ClientConfig: cc,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{coordinationv1.GroupName}, APIVersions: []string{"v1"},
					Resources: []string{"leases"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: health.Namespace}},
			MatchConditions: []admissionregistrationv1.MatchCondition{{
				Name: "hub-credentials", Expression: fmt.Sprintf("request.userInfo.username.startsWith(%q)", hubrbac.UserPrefix),
			}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr.To[int32](5),
			AdmissionReviewVersions: []string{"v1"},
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
		}},
	}
}

// ReportValidator lets a hub write only its own unit's report: RBAC cannot
// confine a Lease create to a name, so without it a compromised node could
// publish verdicts for any unit. A hub credential (user sitegrid-hub:<node>)
// may write Lease <unit> in the health namespace only when the Lease holds
// a report of unit <unit> that <node> publishes and holds, and <node> and
// every member the report lists carry the label <group>=<unit> of one
// NodeGroup <group>.
type ReportValidator struct {
	// Client reads Nodes and NodeGroups (cached).
	Client  client.Reader
	Decoder admission.Decoder
}

// Handle admits or denies a hub's Lease write.
func (v *ReportValidator) Handle(ctx context.Context, req admission.Request) admission.Response {
	node, ok := strings.CutPrefix(req.UserInfo.Username, hubrbac.UserPrefix)
	if !ok {
		return admission.Allowed("not a hub")
	}
	lease := &coordinationv1.Lease{}
	if err := v.Decoder.DecodeRaw(req.Object, lease); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if err := v.check(ctx, node, lease); err != nil {
		if isDenial(err) {
			return admission.Denied(err.Error())
		}
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return admission.Allowed("the unit's own member publishes its report")
}

// denial is a reason to refuse the write, as opposed to a failure to decide.
type denial struct{ msg string }

func (d denial) Error() string { return d.msg }

func isDenial(err error) bool {
	_, ok := err.(denial)
	return ok
}

func deny(format string, args ...any) error { return denial{fmt.Sprintf(format, args...)} }

func (v *ReportValidator) check(ctx context.Context, node string, lease *coordinationv1.Lease) error {
	report, err := health.ParseReport(lease.Annotations)
	if err != nil {
		return deny("hub %s may write unit reports only: %v", node, err)
	}
	switch {
	case lease.Name != report.Unit:
		return deny("Lease %s holds a report of unit %s", lease.Name, report.Unit)
	case report.Reporter != node:
		return deny("hub %s writes a report that says %s publishes it", node, report.Reporter)
	case ptr.Deref(lease.Spec.HolderIdentity, node) != node:
		return deny("hub %s writes a Lease held by %s", node, *lease.Spec.HolderIdentity)
	}
	for n := range report.Verdicts {
		if !slices.Contains(report.Members, n) {
			return deny("the report judges %s, which it does not list as a member", n)
		}
	}
	groups := &sitev1.NodeGroupList{}
	if err := v.Client.List(ctx, groups); err != nil {
		return err
	}
	self := &corev1.Node{}
	if err := v.Client.Get(ctx, client.ObjectKey{Name: node}, self); err != nil {
		if apierrors.IsNotFound(err) {
			return deny("hub %s has no Node", node)
		}
		return err
	}
	var group string
	for _, g := range groups.Items {
		if self.Labels[g.Name] == report.Unit {
			group = g.Name
			break
		}
	}
	if group == "" {
		return deny("node %s is in no unit %s of a NodeGroup", node, report.Unit)
	}
	for _, m := range report.Members {
		n := &corev1.Node{}
		if err := v.Client.Get(ctx, client.ObjectKey{Name: m}, n); err != nil {
			if apierrors.IsNotFound(err) {
				return deny("member %s of the report has no Node", m)
			}
			return err
		}
		if n.Labels[group] != report.Unit {
			return deny("member %s of the report is not in unit %s (label %s=%q)", m, report.Unit, group, n.Labels[group])
		}
	}
	return nil
}
