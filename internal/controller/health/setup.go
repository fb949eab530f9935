package health

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/sitegrid/sitegrid/internal/health"
)

// +kubebuilder:rbac:groups="",namespace=sitegrid-health,resources=secrets,verbs=get;create

// WebhookPath is where the manager serves the webhook.
const WebhookPath = "/sitegrid/health/mutate"

// WebhookName names the MutatingWebhookConfiguration.
const WebhookName = "sitegrid-node-health"

// DefaultNodeControllerUsers are the users kube-controller-manager's node
// lifecycle controller writes as: its own ServiceAccount when the
// controller-manager runs with --use-service-account-credentials (kubeadm
// and managed clusters), else the controller-manager's user.
var DefaultNodeControllerUsers = []string{"system:serviceaccount:kube-system:node-controller", "system:kube-controller-manager"}

// WebhookConfiguration is the registration of the webhook: node updates
// and pod status updates, made by users (the lifecycle controller), failing
// open within a short timeout.
func WebhookConfiguration(cc admissionregistrationv1.WebhookClientConfig, users []string) *admissionregistrationv1.MutatingWebhookConfiguration {
	quoted := ""
	for i, u := range users {
		if i > 0 {
			quoted += ", "
		}
		quoted += fmt.Sprintf("%q", u)
	}
	match := []admissionregistrationv1.MatchCondition{{
		Name:       "node-lifecycle-controller",
		Expression: "request.userInfo.username in [" + quoted + "]",
	}}
	hook := func(name, resource string) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name:         name,
			ClientConfig: cc,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{resource}, Scope: ptr.To(admissionregistrationv1.AllScopes)},
			}},
			MatchConditions:         match,
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr.To[int32](2),
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
		}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: WebhookName},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{hook("nodes.health.sitegrid.io", "nodes"), hook("pods.health.sitegrid.io", "pods/status")},
	}
}

// EnsureGossipKey creates the units' gossip key Secret with a random
// 32-byte key when there is none; an existing one is left as it is (it may
// be mid-rotation).
// It reads with reader (uncached: the manager watches no Secrets).
func EnsureGossipKey(ctx context.Context, reader client.Reader, c client.Client) error {
	s := &corev1.Secret{}
	err := reader.Get(ctx, client.ObjectKey{Namespace: health.Namespace, Name: health.GossipKeySecret}, s)
	if err == nil || !apierrors.IsNotFound(err) {
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	s = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: health.Namespace, Name: health.GossipKeySecret},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"keys": []byte(base64.StdEncoding.EncodeToString(key) + "\n")},
	}
	if err := c.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create Secret %s/%s: %w", health.Namespace, health.GossipKeySecret, err)
	}
	logf.FromContext(ctx).Info("created the units' gossip key", "secret", health.Namespace+"/"+health.GossipKeySecret)
	return nil
}
