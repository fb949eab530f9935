package manager

import (
	"context"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	"github.com/sitegrid/sitegrid/internal/controller/grid"
	"github.com/sitegrid/sitegrid/internal/controller/site"
)

// The API groups the manager serves, and its controllers.
var (
	schemeBuilders = []func(*runtime.Scheme) error{sitev1.AddToScheme, gridv1.AddToScheme}
	setupFuncs     = []func(ctrl.Manager, Options) error{setupSite, setupGrids}
)

func setupSite(mgr ctrl.Manager, _ Options) error {
	if err := site.IndexNodeLabels(context.Background(), mgr); err != nil {
		return err
	}
	nodes, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	if err := (&site.NodeReconciler{
		Client: mgr.GetClient(), Nodes: nodes, Recorder: mgr.GetEventRecorder("sitegrid-site"),
		MaxConcurrentReconciles: 8,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&site.NodeUnitReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&site.NodeGroupReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("sitegrid-site")}).SetupWithManager(mgr)
}

func setupGrids(mgr ctrl.Manager, opts Options) error {
	recorder := mgr.GetEventRecorder("sitegrid-grid")
	clk := clock.RealClock{}
	if err := grid.NewDeploymentGridReconciler(mgr.GetClient(), recorder, clk, opts.UnitGracePeriod).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := grid.NewStatefulSetGridReconciler(mgr.GetClient(), recorder, clk, opts.UnitGracePeriod).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&grid.ServiceGridReconciler{Client: mgr.GetClient(), Recorder: recorder}).SetupWithManager(mgr)
}
