package manager

import (
	"context"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	sitev1alpha1 "github.com/sitegrid/sitegrid/api/site/v1alpha1"
	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	"github.com/sitegrid/sitegrid/internal/controller/certificates"
	"github.com/sitegrid/sitegrid/internal/controller/grid"
	"github.com/sitegrid/sitegrid/internal/controller/health"
	"github.com/sitegrid/sitegrid/internal/controller/site"
	unithealth "github.com/sitegrid/sitegrid/internal/health"
)

// The API groups the manager serves, and its controllers.
var (
	schemeBuilders = []func(*runtime.Scheme) error{sitev1.AddToScheme, sitev1alpha1.AddToScheme, gridv1.AddToScheme}
	setupFuncs     = []func(ctrl.Manager, Options) error{setupSite, setupGrids, setupHealth, setupConversion, setupHubCSRs}
)

func setupSite(mgr ctrl.Manager, opts Options) error {
	if err := site.IndexNodeLabels(context.Background(), mgr); err != nil {
		return err
	}
	if err := site.IndexUnitCandidates(context.Background(), mgr); err != nil {
		return err
	}
	nodes, err := kubernetes.NewForConfig(protobuf(mgr.GetConfig()))
	if err != nil {
		return err
	}
	if err := (&site.NodeReconciler{
		Client: mgr.GetClient(), Nodes: nodes, Recorder: mgr.GetEventRecorder("sitegrid-site"),
		MaxConcurrentReconciles: 8,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&site.NodeUnitReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("sitegrid-site")}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&site.NodeGroupReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("sitegrid-site")}).SetupWithManager(mgr); err != nil {
		return err
	}
	return setupDefaultUnits(mgr, opts.DefaultUnits)
}

// setupDefaultUnits creates SuperEdge's default units, once the manager
// leads, retrying until it succeeds.
func setupDefaultUnits(mgr ctrl.Manager, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if err := site.CheckDefaultUnits(names); err != nil {
		return err
	}
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return wait.PollUntilContextCancel(ctx, 5*time.Second, true, func(ctx context.Context) (bool, error) {
			if err := site.EnsureDefaultUnits(ctx, mgr.GetClient(), names); err != nil {
				ctrl.Log.WithName("site").Error(err, "default units")
				return false, nil
			}
			return true, nil
		})
	}))
}

// setupHealth makes sure the units' gossip key exists and serves the node
// health webhook when it has a certificate.
func setupHealth(mgr ctrl.Manager, opts Options) error {
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return wait.PollUntilContextCancel(ctx, 5*time.Second, true, func(ctx context.Context) (bool, error) {
			if err := health.EnsureGossipKey(ctx, mgr.GetAPIReader(), mgr.GetClient()); err != nil {
				ctrl.Log.WithName("health").Error(err, "gossip key")
				return false, nil
			}
			return true, nil
		})
	})); err != nil {
		return err
	}
	if opts.WebhookCertDir == "" {
		ctrl.Log.WithName("health").Info("no webhook certificate: the node health webhook is off")
		return nil
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &coordinationv1.Lease{}, health.MemberIndex, health.IndexMembers); err != nil {
		return err
	}
	guard := &health.Guard{Client: mgr.GetClient(), Clock: clock.RealClock{}, MaxAutonomy: opts.MaxAutonomy}
	mgr.GetWebhookServer().Register(health.WebhookPath, &webhook.Admission{Handler: &health.Webhook{Guard: guard, Decoder: admission.NewDecoder(mgr.GetScheme())}})
	mgr.GetWebhookServer().Register(health.ReportsWebhookPath, &webhook.Admission{Handler: &health.ReportValidator{Client: mgr.GetClient(), Decoder: admission.NewDecoder(mgr.GetScheme())}})
	return (&health.Releaser{Guard: guard, Client: mgr.GetClient(), Pods: mgr.GetAPIReader()}).SetupWithManager(mgr)
}

// setupHubCSRs approves the hubs' certificate requests.
func setupHubCSRs(mgr ctrl.Manager, _ Options) error {
	csrs, err := kubernetes.NewForConfig(protobuf(mgr.GetConfig()))
	if err != nil {
		return err
	}
	return (&certificates.HubCSRReconciler{Client: mgr.GetClient(), CSRs: csrs, Recorder: mgr.GetEventRecorder("sitegrid-hub-csr")}).SetupWithManager(mgr)
}

func setupGrids(mgr ctrl.Manager, opts Options) error {
	recorder := mgr.GetEventRecorder("sitegrid-grid")
	clk := clock.RealClock{}
	if err := grid.NewDeploymentGridReconciler(mgr.GetClient(), mgr.GetAPIReader(), recorder, clk, opts.UnitGracePeriod).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := grid.NewStatefulSetGridReconciler(mgr.GetClient(), mgr.GetAPIReader(), recorder, clk, opts.UnitGracePeriod).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&grid.ServiceGridReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: recorder}).SetupWithManager(mgr)
}

// protobuf is cfg for a clientset of built-in types answered in protobuf,
// as controller-runtime's own client is: the apiserver encodes a node
// once for every protobuf client instead of once more in JSON, and the
// manager decodes it at a fraction of JSON's cost. A server-side apply's
// body is JSON whatever this says.
func protobuf(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return cfg
}

// cacheOptions limits the cached Deployments, StatefulSets and Services to
// the children of grids: a cluster's other workloads cost the manager no
// memory and no watch traffic. Nodes are cached without what no controller
// reads (stripNode).
func cacheOptions() cache.Options {
	children := labels.SelectorFromSet(nil)
	if req, err := labels.NewRequirement(gridv1.LabelGridSelector, selection.Exists, nil); err == nil {
		children = children.Add(*req)
	}
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&appsv1.Deployment{}:  {Label: children},
		&appsv1.StatefulSet{}: {Label: children},
		&corev1.Service{}:     {Label: children},
		// Only the units' health reports.
		&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{unithealth.Namespace: {}}},
		&corev1.Node{}:          {Transform: stripNode},
	}}
}
