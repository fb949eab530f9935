package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

const ns = "sitegrid-system"

// TestManagerAgainstAPIServer runs the manager against a real apiserver: it
// wins the leader Lease, reports healthy and ready, serves metrics only to
// callers RBAC allows, and gives the Lease up when stopped.
func TestManagerAgainstAPIServer(t *testing.T) {
	cfg := testenv.StartEnvtest(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	metricsPort, probePort := freePort(t), freePort(t)
	mgr, err := New(cfg, Options{
		MetricsAddr: "127.0.0.1:" + strconv.Itoa(metricsPort), SecureMetrics: true,
		ProbeAddr:   "127.0.0.1:" + strconv.Itoa(probePort),
		LeaderElect: true, LeaderElectionNamespace: ns,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop, done := run(mgr)
	defer func() { stop(); <-done }()

	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		lease, err := cs.CoordinationV1().Leases(ns).Get(ctx, LeaderElectionID, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return errors.New("lease has no holder")
		}
		return nil
	})
	for _, path := range []string{"/healthz", "/readyz"} {
		testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
			code, _, err := get(ctx, fmt.Sprintf("http://127.0.0.1:%d%s", probePort, path), "")
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("%s: HTTP %d", path, code)
			}
			return err
		})
	}

	metricsURL := fmt.Sprintf("https://127.0.0.1:%d/metrics", metricsPort)
	reader := serviceAccountToken(t, cs, "prometheus")
	stranger := serviceAccountToken(t, cs, "stranger")
	bindMetricsReader(t, cs, "prometheus")
	cases := []struct {
		name, token string
		want        int
	}{
		{"no credentials", "", http.StatusUnauthorized},
		{"account without the metrics-reader role", stranger, http.StatusForbidden},
		{"account bound to the metrics-reader role", reader, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
				code, body, err := get(ctx, metricsURL, tc.token)
				if err != nil {
					return err
				}
				if code != tc.want {
					return fmt.Errorf("HTTP %d, want %d", code, tc.want)
				}
				if code == http.StatusOK && !strings.Contains(body, "leader_election_master_status") {
					return errors.New("metrics lack leader_election_master_status")
				}
				return nil
			})
		})
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("manager stopped with %v", err)
		}
		done <- nil
	case <-time.After(45 * time.Second):
		t.Fatal("manager did not stop after its context ended")
	}
	lease, err := cs.CoordinationV1().Leases(ns).Get(ctx, LeaderElectionID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "" {
		t.Errorf("lease still held by %q after a graceful stop", *lease.Spec.HolderIdentity)
	}
}

// run starts mgr; stop ends it, and done receives what Start returned.
func run(mgr interface{ Start(context.Context) error }) (stop context.CancelFunc, done chan error) {
	ctx, stop := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return stop, done
}

func TestNewRefusesLeaderElectionWithoutNamespace(t *testing.T) {
	_, err := New(nil, Options{LeaderElect: true})
	if err == nil || !strings.Contains(err.Error(), "namespace") {
		t.Fatalf("got %v, want an error naming the missing namespace", err)
	}
}

func serviceAccountToken(t *testing.T, cs kubernetes.Interface, name string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// bindMetricsReader binds the ClusterRole that config/rbac ships for
// scrapers.
func bindMetricsReader(t *testing.T, cs kubernetes.Interface, sa string) {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "sitegrid-metrics-reader"},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-reader-" + sa},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func get(ctx context.Context, url, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// The metrics certificate is self-signed by the manager at start.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // test client of a self-signed endpoint
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
