// Package manager assembles sitegrid-manager, the cloud-side controller
// manager: a controller-runtime manager with leader election, health and
// readiness probes, Prometheus metrics behind Kubernetes authentication and
// authorization, and graceful shutdown. Controllers register in setupFuncs.
package manager

import (
	"errors"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// The manager's own permissions; controllers add theirs next to their code.
// Leader election uses a Lease in the manager's namespace; metrics requests
// are authenticated and authorized against the apiserver.
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=sitegrid-system,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=sitegrid-system,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// LeaderElectionID names the Lease that elects the active manager.
const LeaderElectionID = "sitegrid-manager.sitegrid.io"

// Options configure the manager.
type Options struct {
	// MetricsAddr serves /metrics; "0" disables it.
	MetricsAddr string
	// SecureMetrics serves metrics over HTTPS and asks the apiserver whether
	// each caller may `get` the non-resource URL /metrics.
	SecureMetrics bool
	// MetricsCertDir holds tls.crt and tls.key; empty means a self-signed
	// certificate generated at start.
	MetricsCertDir string
	// ProbeAddr serves /healthz and /readyz without authentication.
	ProbeAddr string
	// LeaderElect makes one replica active at a time.
	LeaderElect bool
	// LeaderElectionNamespace holds the Lease; empty means the namespace the
	// manager runs in.
	LeaderElectionNamespace string
	// ShutdownTimeout bounds how long controllers may take to stop.
	ShutdownTimeout time.Duration
	// UnitGracePeriod is how long a grid's copy outlives the last node of its
	// unit, so a label flap never wipes a site's workload. Default 5 minutes.
	UnitGracePeriod time.Duration
	// WebhookPort and WebhookCertDir (tls.crt, tls.key) serve the node
	// health webhooks (docs/health.md) and the site CRDs' conversion
	// webhook (docs/sites.md); no cert dir: no webhooks.
	WebhookPort int
	// WebhookHost is the address the webhook server binds; empty: all.
	WebhookHost    string
	WebhookCertDir string
	// MaxAutonomy bounds how long a NotReady node its unit vouches for is
	// kept (nodes and units may set their own); 0: no bound.
	MaxAutonomy time.Duration
	// DefaultUnits are SuperEdge's default units to create when missing
	// (unit-node-all, unit-node-edge, unit-node-cloud, unit-node-master).
	DefaultUnits []string
	// SkipControllerNameValidation lets one process run several managers,
	// as tests do; controller names are otherwise unique per process.
	SkipControllerNameValidation bool
}

// Scheme knows every type the manager reads or writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	for _, add := range schemeBuilders {
		utilruntime.Must(add(s))
	}
	return s
}

// New builds a manager with every controller registered.
func New(cfg *rest.Config, opts Options) (ctrl.Manager, error) {
	if opts.LeaderElect && opts.LeaderElectionNamespace == "" {
		return nil, errors.New("leader election needs a namespace: set --leader-election-namespace or run in a pod")
	}
	if opts.UnitGracePeriod == 0 {
		opts.UnitGracePeriod = 5 * time.Minute
	}
	shutdown := opts.ShutdownTimeout
	if shutdown == 0 {
		shutdown = 30 * time.Second
	}
	metrics := metricsserver.Options{
		BindAddress:   opts.MetricsAddr,
		SecureServing: opts.SecureMetrics,
		CertDir:       opts.MetricsCertDir,
	}
	if opts.SecureMetrics {
		metrics.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        Scheme(),
		Cache:                         cacheOptions(),
		Metrics:                       metrics,
		HealthProbeBindAddress:        opts.ProbeAddr,
		LeaderElection:                opts.LeaderElect,
		LeaderElectionID:              LeaderElectionID,
		LeaderElectionNamespace:       opts.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &shutdown,
		Controller:                    config.Controller{SkipNameValidation: &opts.SkipControllerNameValidation},
		WebhookServer:                 webhook.NewServer(webhook.Options{Host: opts.WebhookHost, Port: opts.WebhookPort, CertDir: opts.WebhookCertDir}),
	})
	if err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	// Ready once the informer caches have synced, so a rolling update does
	// not route to a replica that cannot answer yet.
	if err := mgr.AddReadyzCheck("readyz", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return errors.New("informer caches not synced")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for _, setup := range setupFuncs {
		if err := setup(mgr, opts); err != nil {
			return nil, err
		}
	}
	return mgr, nil
}
