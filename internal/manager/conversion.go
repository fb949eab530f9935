package manager

import (
	ctrl "sigs.k8s.io/controller-runtime"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// ConversionPath is where the webhook server converts NodeUnits and
// NodeGroups between site.superedge.io/v1alpha1 and v1alpha2, the path of
// the CRDs' conversion webhook (controller-runtime's).
const ConversionPath = "/convert"

// setupConversion serves the conversion webhook of the site CRDs when the
// manager has a webhook certificate. Without it, only v1alpha2 requests
// work: a v1alpha1 one fails (the apiserver cannot reach the webhook), which
// never loses a field.
func setupConversion(mgr ctrl.Manager, opts Options) error {
	if opts.WebhookCertDir == "" {
		ctrl.Log.WithName("conversion").Info("no webhook certificate: site.superedge.io/v1alpha1 is not converted")
		return nil
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &sitev1.NodeUnit{}).Complete(); err != nil {
		return err
	}
	return ctrl.NewWebhookManagedBy(mgr, &sitev1.NodeGroup{}).Complete()
}
