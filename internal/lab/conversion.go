package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/manager"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SiteCRDs are the CRDs whose versions sitegrid-manager converts.
var SiteCRDs = []string{"nodeunits.site.superedge.io", "nodegroups.site.superedge.io"}

// RegisterConversion points the site CRDs' conversion at the manager's
// webhook, served at url with a certificate ca signs: the lab's (and an end
// to end test's) counterpart of the cert-manager-filled Service reference
// of config/default.
func RegisterConversion(ctx context.Context, cfg *rest.Config, url string, ca []byte) error {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"conversion": apiextensionsv1.CustomResourceConversion{
		Strategy: apiextensionsv1.WebhookConverter,
		Webhook: &apiextensionsv1.WebhookConversion{
			ConversionReviewVersions: []string{"v1"},
			ClientConfig:             &apiextensionsv1.WebhookClientConfig{URL: &url, CABundle: ca},
		},
	}}})
	if err != nil {
		return err
	}
	crds := dyn.Resource(apiextensionsv1.SchemeGroupVersion.WithResource("customresourcedefinitions"))
	for _, name := range SiteCRDs {
		if _, err := crds.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "sitegridctl-lab-conversion"}); err != nil {
			return fmt.Errorf("register the conversion webhook of %s: %w", name, err)
		}
	}
	return nil
}

// registerConversion registers the manager's conversion webhook, served at
// base with a certificate of the cluster CA.
func registerConversion(ctx context.Context, cp *controlplane.ControlPlane, base string) error {
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return err
	}
	return RegisterConversion(ctx, cp.RESTConfig(), base+manager.ConversionPath, ca)
}
