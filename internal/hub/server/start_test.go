package server_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/health"
	"github.com/sitegrid/sitegrid/internal/hub/config"
	"github.com/sitegrid/sitegrid/internal/hub/server"
	"github.com/sitegrid/sitegrid/internal/rbac/hubrbac"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestFailedStartLeavesNothing: a hub whose start fails after parts of it
// run (its API serving and reading through itself, its probes of the
// cloud, its informers) leaves no goroutine running and no address bound:
// here its distributed health member cannot bind its gossip address, and,
// earlier in the start, its health address is taken.
func TestFailedStartLeavesNothing(t *testing.T) {
	cp := testenv.StartControlPlane(t, testenv.ControlPlaneOptions{})
	admin, err := cp.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := controlplane.CreateNode(ctx, admin, controlplane.Node{Name: node, InternalIP: "198.18.1.10", Labels: map[string]string{"shops": "a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: health.Namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if _, err := admin.CoreV1().Secrets(health.Namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: health.GossipKeySecret},
		Data: map[string][]byte{"keys": []byte(base64.StdEncoding.EncodeToString(key))}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role, binding := hubrbac.Health(node)
	if _, err := admin.RbacV1().Roles(health.Namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(health.Namespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	servingCert, servingKey, credCert, credKey := hubCredentials(t, cp, admin, node, dir)
	newConfig := func() config.HubConfiguration {
		return config.HubConfiguration{
			NodeName: node, ListenAddress: freeAddr(t), HealthAddress: freeAddr(t),
			ServingCertFile: servingCert, ServingKeyFile: servingKey, ClientCAFile: cp.CAFile, ServerCAFile: cp.CAFile,
			Servers: []string{cp.Endpoint}, ClientCertFile: credCert, ClientKeyFile: credKey,
			CachePath: filepath.Join(dir, "cache.db"), ProbeInterval: metav1.Duration{Duration: 200 * time.Millisecond},
		}
	}
	// What runs now (the test's own clients) is not the hub's.
	before := goleak.IgnoreCurrent()

	for _, tc := range []struct {
		name string
		// taken is the configuration's address another process holds.
		taken func(*config.HubConfiguration) *string
	}{
		{"the health address is taken", func(c *config.HubConfiguration) *string { return &c.HealthAddress }},
		{"the gossip address is taken", func(c *config.HubConfiguration) *string {
			c.Health = config.Health{UnitKey: "shops", BindAddress: freeAddr(t)}
			c.Health.AdvertiseAddress = c.Health.BindAddress
			return &c.Health.BindAddress
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := newConfig()
			holder, err := net.Listen("tcp", *tc.taken(&cfg))
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close()
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if err := server.Run(rctx, cfg); err == nil || rctx.Err() != nil {
				t.Fatalf("the hub started with %s held elsewhere: %v", holder.Addr(), err)
			}
			for _, addr := range []string{cfg.ListenAddress, cfg.HealthAddress} {
				if addr == holder.Addr().String() {
					continue
				}
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Errorf("the failed hub still holds %s: %v", addr, err)
					continue
				}
				_ = ln.Close()
			}
			goleak.VerifyNone(t, before,
				// Started once per process and reused by every later client.
				goleak.IgnoreAnyFunction("github.com/VictoriaMetrics/metrics.summariesSwapCron"),
			)
		})
	}
}
