package server_test

import (
	"context"
	"fmt"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/gobuild"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/process"
	"github.com/sitegrid/sitegrid/internal/rbac/hubrbac"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

const node = "edge-1"

func writePair(t *testing.T, dir, base string, kp *pki.KeyPair) (string, string) {
	t.Helper()
	c, k, err := pki.WriteKeyPair(dir, base, kp.Cert, kp.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// hubCredentials grants node's hub its RBAC and writes its serving
// certificate and its own client credential into dir.
func hubCredentials(t *testing.T, cp *controlplane.ControlPlane, admin kubernetes.Interface, node, dir string) (servingCert, servingKey, credCert, credKey string) {
	t.Helper()
	ctx := context.Background()
	role, binding := hubrbac.Cluster(node)
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	serving, err := cp.IssueCert(pki.LeafRequest{CommonName: "sitegrid-hub", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := cp.IssueCert(pki.LeafRequest{CommonName: hubrbac.User(node), Client: true})
	if err != nil {
		t.Fatal(err)
	}
	servingCert, servingKey = writePair(t, dir, "serving", serving)
	credCert, credKey = writePair(t, dir, "hub", cred)
	return servingCert, servingKey, credCert, credKey
}

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(p)
}

// TestKubectlThroughHub runs the sitegrid-hub binary in front of a real
// control plane: the real kubectl, as the node's kubelet, reads through it,
// and reads the same again after the control plane is gone.
func TestKubectlThroughHub(t *testing.T) {
	cp := testenv.StartControlPlane(t, testenv.ControlPlaneOptions{})
	admin, err := cp.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := controlplane.CreateNode(ctx, admin, controlplane.Node{Name: node, InternalIP: "198.18.1.10"}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	if _, err := admin.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	servingCert, servingKey, hubCert, hubKey := hubCredentials(t, cp, admin, node, dir)
	kubelet, err := cp.IssueCert(pki.LeafRequest{CommonName: "system:node:" + node, Organizations: []string{"system:nodes"}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	api, health := freeAddr(t), freeAddr(t)
	config := fmt.Sprintf(`nodeName: %s
listenAddress: %s
healthAddress: %s
servingCertFile: %s
servingKeyFile: %s
clientCAFile: %s
serverCAFile: %s
servers: [%s]
clientCertFile: %s
clientKeyFile: %s
cachePath: %s
probeInterval: 500ms
`, node, api, health, servingCert, servingKey, cp.CAFile, cp.CAFile, cp.Endpoint, hubCert, hubKey, filepath.Join(dir, "cache", "cache.db"))
	configPath := filepath.Join(dir, "hub.yaml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "sitegrid-hub")
	build := gobuild.Command(context.Background(), bin, "./cmd/sitegrid-hub")
	build.Dir = testenv.RepoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// Started like the control plane: it dies with the test binary.
	hub, err := process.Start(process.Spec{Name: "sitegrid-hub", Path: bin, Args: []string{"--config", configPath}, LogFile: filepath.Join(dir, "hub.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		hub.Stop(10 * time.Second)
		if t.Failed() {
			if log, err := os.ReadFile(filepath.Join(dir, "hub.log")); err == nil {
				t.Logf("hub log:\n%s", log)
			}
		}
	})

	// kubectl with the kubelet's credentials, pointed at the hub.
	keyPEM, err := pki.KeyPEM(kubelet.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(cp.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["hub"] = &clientcmdapi.Cluster{Server: "https://" + api, CertificateAuthorityData: caPEM}
	kc.AuthInfos["kubelet"] = &clientcmdapi.AuthInfo{ClientCertificateData: pki.CertPEM(kubelet.Cert), ClientKeyData: keyPEM}
	kc.Contexts["hub"] = &clientcmdapi.Context{Cluster: "hub", AuthInfo: "kubelet"}
	kc.CurrentContext = "hub"
	kubeconfig := filepath.Join(dir, "kubelet.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) (string, error) {
		out, err := exec.Command(testenv.Binaries(t).Path(kubebin.Kubectl), append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		return string(out), err
	}
	read := func() {
		t.Helper()
		testenv.Eventually(t, 20*time.Second, func(context.Context) error {
			if out, err := kubectl("get", "node", node, "-o", "name"); err != nil || strings.TrimSpace(out) != "node/"+node {
				return fmt.Errorf("get node: %v %s", err, out)
			}
			if out, err := kubectl("get", "pods", "-A", "--field-selector", "spec.nodeName="+node, "-o", "name"); err != nil || strings.TrimSpace(out) != "pod/app" {
				return fmt.Errorf("get pods: %v %s", err, out)
			}
			// kubectl's own table: the apiserver's columns, online and
			// offline (the Table the hub kept).
			out, err := kubectl("get", "pods", "-A", "--field-selector", "spec.nodeName="+node)
			if header, _, _ := strings.Cut(out, "\n"); err != nil || strings.Join(strings.Fields(header), " ") != "NAMESPACE NAME READY STATUS RESTARTS AGE" || !strings.Contains(out, "app") {
				return fmt.Errorf("kubectl get pods: %v\n%s", err, out)
			}
			return nil
		})
	}
	read()

	cp.Stop()
	testenv.Eventually(t, 20*time.Second, func(context.Context) error {
		body, err := get("http://" + health + "/readyz")
		if err != nil || !strings.Contains(body, "offline") {
			return fmt.Errorf("readyz %q %v", body, err)
		}
		return nil
	})
	read()
	metrics, err := get("http://" + health + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	// Prometheus' own parser reads the page; the hub's metrics have their
	// types, and the offline reads above were served from the cache.
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(metrics))
	if err != nil {
		t.Fatalf("Prometheus cannot parse /metrics: %v\n%s", err, metrics)
	}
	for name, typ := range map[string]dto.MetricType{
		"sitegrid_hub_upstream_online": dto.MetricType_GAUGE, "sitegrid_hub_requests_total": dto.MetricType_COUNTER,
		"sitegrid_hub_request_duration_seconds": dto.MetricType_SUMMARY, "sitegrid_hub_cache_size_bytes": dto.MetricType_GAUGE,
		"process_resident_memory_bytes": dto.MetricType_GAUGE, "go_memstats_heap_inuse_bytes": dto.MetricType_GAUGE,
	} {
		if f := families[name]; f == nil || f.GetType() != typ {
			t.Errorf("metric %s: %v, want a %v", name, f, typ)
		}
	}
	value := func(name string, label ...string) float64 {
		for _, m := range families[name].GetMetric() {
			if len(label) == 0 || len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label[0] {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
		return -1
	}
	if v := value("sitegrid_hub_upstream_online"); v != 0 {
		t.Errorf("sitegrid_hub_upstream_online %v while offline", v)
	}
	if v := value("sitegrid_hub_requests_total", "cache"); v < 1 {
		t.Errorf("sitegrid_hub_requests_total{served=cache} %v after reads from the cache", v)
	}
	if v := value("sitegrid_hub_cache_size_bytes"); v <= 0 {
		t.Errorf("sitegrid_hub_cache_size_bytes %v", v)
	}
}

func get(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
