package certificates

import (
	"context"
	"fmt"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// +kubebuilder:rbac:groups=certificates.k8s.io,resources=certificatesigningrequests,verbs=get;list;watch
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=certificatesigningrequests/approval,verbs=update
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=signers,resourceNames=kubernetes.io/kube-apiserver-client;kubernetes.io/kubelet-serving,verbs=approve
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="events.k8s.io",resources=events,verbs=create;patch

// Condition reason and event reason of the approver's decisions.
const (
	ReasonApproved    = "SitegridHubApproved"
	ReasonNotApproved = "SitegridHubNotApproved"
)

// HubCSRReconciler approves a hub's CSR when review finds it the node's
// own; any other hub CSR stays pending for a human, with an Event saying
// why.
type HubCSRReconciler struct {
	Client client.Client
	// CSRs writes approvals (the approval subresource).
	CSRs     kubernetes.Interface
	Recorder events.EventRecorder
}

func (r *HubCSRReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var csr certificatesv1.CertificateSigningRequest
	if err := r.Client.Get(ctx, req.NamespacedName, &csr); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if decided(&csr) {
		return reconcile.Result{}, nil
	}
	hub, ours, err := parseHubRequest(&csr)
	if !ours {
		return reconcile.Result{}, nil
	}
	if err == nil {
		err = r.review(ctx, &csr, hub)
	}
	if err != nil {
		log.FromContext(ctx).Info("hub CSR left for a human", "csr", csr.Name, "requester", csr.Spec.Username, "reason", err.Error())
		r.Recorder.Eventf(&csr, nil, corev1.EventTypeWarning, ReasonNotApproved, "Review", "not approved: %s", err)
		return reconcile.Result{}, nil
	}
	return reconcile.Result{}, r.approve(ctx, &csr, hub)
}

// review finds the node and reviews the request against it.
func (r *HubCSRReconciler) review(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, hub *hubRequest) error {
	var node corev1.Node
	err := r.Client.Get(ctx, client.ObjectKey{Name: hub.node}, &node)
	switch {
	case apierrors.IsNotFound(err):
		return review(csr, hub, nil)
	case err != nil:
		return fmt.Errorf("read node %s: %w", hub.node, err)
	}
	return review(csr, hub, &node)
}

func (r *HubCSRReconciler) approve(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, hub *hubRequest) error {
	what := "client credential " + hub.x509.Subject.CommonName
	if hub.serving {
		what = "serving certificate"
	}
	approved := csr.DeepCopy()
	approved.Status.Conditions = append(approved.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: ReasonApproved,
		Message:        fmt.Sprintf("sitegrid-manager: the hub %s of node %s, asked for by the node's own identity %s", what, hub.node, csr.Spec.Username),
		LastUpdateTime: metav1.Now(),
	})
	if _, err := r.CSRs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, approved, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("approve CSR %s: %w", csr.Name, err)
	}
	log.FromContext(ctx).Info("approved hub CSR", "csr", csr.Name, "node", hub.node, "serving", hub.serving)
	return nil
}

// decided: approved or denied already (or failed), by anyone.
func decided(csr *certificatesv1.CertificateSigningRequest) bool {
	for _, c := range csr.Status.Conditions {
		switch c.Type {
		case certificatesv1.CertificateApproved, certificatesv1.CertificateDenied, certificatesv1.CertificateFailed:
			return true
		}
	}
	return false
}

// SetupWithManager watches CSRs.
func (r *HubCSRReconciler) SetupWithManager(mgr manager.Manager) error {
	return ctrl.ControllerManagedBy(mgr).Named("hub-csr").For(&certificatesv1.CertificateSigningRequest{}).Complete(r)
}
