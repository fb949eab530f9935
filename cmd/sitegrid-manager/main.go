// Command sitegrid-manager runs sitegrid's cloud-side controllers.
package main

import (
	"flag"
	"os"
	"strings"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/sitegrid/sitegrid/internal/manager"
)

func main() {
	var opts manager.Options
	flag.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8443", "Address of the metrics endpoint; \"0\" disables it.")
	flag.BoolVar(&opts.SecureMetrics, "metrics-secure", true, "Serve metrics over HTTPS, allowing only callers the apiserver authorizes to get /metrics.")
	flag.StringVar(&opts.MetricsCertDir, "metrics-cert-dir", "", "Folder with tls.crt and tls.key for metrics; empty generates a self-signed certificate.")
	flag.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.BoolVar(&opts.LeaderElect, "leader-elect", true, "Elect one active replica through a Lease.")
	flag.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the leader election Lease (default: $POD_NAMESPACE).")
	flag.DurationVar(&opts.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "How long controllers may take to stop after a signal.")
	flag.DurationVar(&opts.UnitGracePeriod, "unit-grace-period", 5*time.Minute, "How long a grid's copy outlives the last node of its unit.")
	flag.StringVar(&opts.WebhookHost, "webhook-bind-address", "", "Address the admission webhooks listen on; empty: every interface (in a pod, its own IP).")
	flag.IntVar(&opts.WebhookPort, "webhook-port", 9443, "Port of the webhooks: node health admission and site CRD conversion.")
	flag.StringVar(&opts.WebhookCertDir, "webhook-cert-dir", "", "Folder with tls.crt and tls.key of the webhooks (node health, site CRD conversion); empty turns them off (docs/health.md, docs/sites.md).")
	flag.DurationVar(&opts.MaxAutonomy, "max-autonomy", 24*time.Hour, "How long a NotReady edge node its unit vouches for keeps its pods; nodes and units may set their own (0: no bound).")
	var qps float64
	var burst int
	flag.Float64Var(&qps, "kube-api-qps", 100, "Requests per second to the apiserver; writes at scale are bound by it (docs/sites.md).")
	flag.IntVar(&burst, "kube-api-burst", 200, "Burst of requests to the apiserver.")
	zapOpts := zap.Options{}
	defaultUnits := flag.String("default-units", "unit-node-all", "SuperEdge's default units to create when missing, comma-separated: unit-node-all, unit-node-edge, unit-node-cloud, unit-node-master; empty: none (docs/sites.md).")
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *defaultUnits != "" {
		opts.DefaultUnits = strings.Split(*defaultUnits, ",")
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	cfg, err := ctrl.GetConfig()
	if err != nil {
		log.Error(err, "no kubeconfig or in-cluster configuration")
		os.Exit(1)
	}
	cfg.QPS, cfg.Burst = float32(qps), burst
	mgr, err := manager.New(cfg, opts)
	if err != nil {
		log.Error(err, "build manager")
		os.Exit(1)
	}
	// The first SIGINT or SIGTERM stops the manager gracefully; a second one
	// exits at once.
	log.Info("starting sitegrid-manager", "leaderElection", opts.LeaderElect)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "manager stopped with an error")
		os.Exit(1)
	}
}
