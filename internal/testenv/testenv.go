// Package testenv is the test harness: a real kube-apiserver and etcd
// through controller-runtime's envtest for controller integration tests, and
// a full control plane (plus kwok nodes) for end-to-end tests. Both use the
// binaries kubebin builds from source. Every process it starts is stopped
// when the test ends, and dies with the test binary if that is killed.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/kubebin"
)

// kits are the kits built once per test binary, on first use.
var kits = struct {
	kube, superEdge func() (kubebin.Set, error)
}{
	kube:      ensureOnce(kubebin.Kit{}),
	superEdge: ensureOnce(kubebin.SuperEdge),
}

func ensureOnce(kit kubebin.Kit) func() (kubebin.Set, error) {
	return sync.OnceValues(func() (kubebin.Set, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		return kubebin.Ensure(ctx, kubebin.Options{Progress: os.Stderr, Kit: kit})
	})
}

// Binaries returns the built Kubernetes binaries, building them on first use
// (`make kube-bin` does that ahead of the tests, with progress).
func Binaries(t testing.TB) kubebin.Set {
	t.Helper()
	set, err := kits.kube()
	if err != nil {
		t.Fatalf("kubernetes binaries: %v", err)
	}
	return set
}

// SuperEdgeBinaries returns SuperEdge's controllers and agents built from
// its module (kubebin.SuperEdge), building them on first use.
func SuperEdgeBinaries(t testing.TB) kubebin.Set {
	t.Helper()
	set, err := kits.superEdge()
	if err != nil {
		t.Fatalf("SuperEdge binaries: %v", err)
	}
	return set
}

// RepoRoot returns the root of the checkout the test runs in.
func RepoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := kubebin.FindRepoRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// CRDPaths are the generated CRDs, installed into every envtest apiserver.
func CRDPaths(t testing.TB) []string {
	return []string{filepath.Join(RepoRoot(t), "config", "crd", "bases")}
}

// StartEnvtest starts etcd and kube-apiserver through envtest with the
// project's CRDs installed, and stops them when the test ends.
func StartEnvtest(t testing.TB) *rest.Config {
	t.Helper()
	cfg, _ := startEnvtest(t, nil)
	return cfg
}

// Webhooks is where the envtest apiserver calls a test's webhook server:
// serve on Port with the tls.crt and tls.key in CertDir.
type Webhooks struct {
	Port    int
	CertDir string
}

// StartEnvtestWithConversion is StartEnvtest with the conversion webhook of
// every CRD whose kinds scheme can convert (hub and spokes) pointed at a
// local webhook server the test runs, as Webhooks says.
func StartEnvtestWithConversion(t testing.TB, scheme *runtime.Scheme) (*rest.Config, Webhooks) {
	t.Helper()
	return startEnvtest(t, scheme)
}

func startEnvtest(t testing.TB, scheme *runtime.Scheme) (*rest.Config, Webhooks) {
	t.Helper()
	bin := Binaries(t)
	assets := t.TempDir()
	// envtest starts its processes without a parent-death signal; these
	// wrappers add one, so an interrupted or timed-out test leaks nothing.
	for _, name := range []string{kubebin.Etcd, kubebin.KubeAPIServer} {
		script := fmt.Sprintf("#!/bin/sh\nexec setpriv --pdeathsig KILL -- %q \"$@\"\n", bin.Path(name))
		if err := os.WriteFile(filepath.Join(assets, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(bin.Path(kubebin.Kubectl), filepath.Join(assets, kubebin.Kubectl)); err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     CRDPaths(t),
		ErrorIfCRDPathMissing: true,
		// Without a scheme that knows the converted kinds, envtest drops
		// every CRD's conversion webhook.
		Scheme: scheme,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	// client-go's default of 5 requests a second would make tests measure
	// their own rate limiter.
	cfg.QPS, cfg.Burst = 200, 400
	return cfg, Webhooks{Port: env.WebhookInstallOptions.LocalServingPort, CertDir: env.WebhookInstallOptions.LocalServingCertDir}
}

// ControlPlaneOptions tune a full control plane for a test.
type ControlPlaneOptions struct {
	ControllerManagerArgs []string
	NodeLeaseSeconds      int
}

// StartControlPlane starts etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok, and stops them when the test ends. When the test
// failed, the tail of each component's log is printed.
func StartControlPlane(t testing.TB, opts ControlPlaneOptions) *controlplane.ControlPlane {
	t.Helper()
	bin := Binaries(t)
	dir, err := os.MkdirTemp("", "sitegrid-cp-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Config{
		Dir: dir, Bin: bin,
		ControllerManagerArgs: opts.ControllerManagerArgs,
		NodeLeaseSeconds:      opts.NodeLeaseSeconds,
	})
	if err != nil {
		dumpLogs(t, dir)
		_ = os.RemoveAll(dir)
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		cp.Stop()
		if t.Failed() {
			dumpLogs(t, dir)
		}
		_ = os.RemoveAll(dir)
	})
	return cp
}

func dumpLogs(t testing.TB, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		t.Logf("--- last lines of %s:\n%s", filepath.Base(l), strings.Join(lines, "\n"))
	}
}

// Eventually polls cond until it returns nil or timeout passes, then fails
// the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, cond func(ctx context.Context) error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		err := cond(ctx)
		// A check cut short by the deadline (or by a client's rate limiter
		// that sees it coming) says nothing about the condition; keep the
		// reason the previous check gave.
		deadline, _ := ctx.Deadline()
		if err == nil || last == nil || ctx.Err() == nil && time.Until(deadline) > time.Second {
			last = err
		}
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("condition not met within %s: %v", timeout, last)
	}
}

// Modify runs change, which reads an object, changes it and writes it back,
// again while the write fails with a conflict: controllers (the node
// lifecycle controller, kwok, sitegrid's own) write the same objects, so a
// read-modify-write in a test must expect to lose a race now and then.
func Modify(t testing.TB, change func(ctx context.Context) error) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error { return change(context.Background()) }); err != nil {
		t.Fatal(err)
	}
}
