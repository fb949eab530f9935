// Package testmanager runs sitegrid-manager, with its real wiring, inside a
// test against the apiserver of envtest or of a full control plane.
package testmanager

import (
	"context"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sitegrid/sitegrid/internal/manager"
)

// Start runs the manager until the test ends and returns a client that knows
// sitegrid's types. Metrics and probes are off unless opts sets them.
func Start(t testing.TB, cfg *rest.Config, opts manager.Options) client.Client {
	t.Helper()
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = "0"
	}
	if opts.ProbeAddr == "" {
		opts.ProbeAddr = "0"
	}
	opts.SkipControllerNameValidation = true // several tests, one process
	mgr, err := manager.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
