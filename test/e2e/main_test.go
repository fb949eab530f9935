package e2e

import (
	"os"
	"testing"

	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// TestMain gives controller-runtime (the clients and the in-process
// managers of these tests) klog's logger, so what it logs is shown with
// the rest instead of a warning that it was never set.
func TestMain(m *testing.M) {
	ctrllog.SetLogger(klog.NewKlogr())
	os.Exit(m.Run())
}
