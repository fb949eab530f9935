package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/certificate/csr"
	"sigs.k8s.io/yaml"

	sitegridconfig "github.com/sitegrid/sitegrid/config"
	"github.com/sitegrid/sitegrid/internal/controller/certificates"
	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/hub/config"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/manager"
	"github.com/sitegrid/sitegrid/internal/process"
	"github.com/sitegrid/sitegrid/internal/testenv"
	"github.com/sitegrid/sitegrid/internal/testenv/testmanager"
)

// signingDuration is the cluster signer's certificate lifetime in
// TestHubJoin: short, so the hub renews within the test (the signer
// backdates by 5 minutes, so renewal comes 0.6 to 2.2 minutes after issue).
const signingDuration = 3 * time.Minute

// TestHubJoin joins a node as a user would, against a full control plane
// whose controller-manager signs with the cluster CA and sitegrid-manager
// approves: `sitegridctl node join-command` prints the join, `sitegrid-hub
// join` discovers the CA with the token and the pin, obtains the hub's
// certificates through CSRs and points the kubelet's kubeconfig at the
// hub; an informer with the kubelet's credential then works through the
// hub while the hub renews both certificates before they expire, without
// an error; CSRs asking for another node's names stay pending with an
// Event; `sitegrid-hub leave` gives the kubeconfig back byte for byte.
func TestHubJoin(t *testing.T) {
	ctlBin := sitegridctl(t)
	hubBin := filepath.Join(filepath.Dir(ctlBin), "sitegrid-hub")
	cp := testenv.StartControlPlane(t, testenv.ControlPlaneOptions{ControllerManagerArgs: []string{"--cluster-signing-duration=" + signingDuration.String()}})
	ctx := context.Background()
	if err := lab.InstallManifests(ctx, cp.RESTConfig(), sitegridconfig.Manifests); err != nil {
		t.Fatal(err)
	}
	testmanager.Start(t, cp.RESTConfig(), manager.Options{})
	admin, err := cp.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	const node, other = "edge-join-1", "edge-join-2"
	for i, n := range []string{node, other} {
		if err := controlplane.CreateNode(ctx, admin, controlplane.Node{Name: n, InternalIP: "198.18.9." + strconv.Itoa(i+1)}); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	kubelet, original := kubeletKubeconfig(t, cp, node)
	// The administrator's half.
	joinArgs := joinCommand(t, ctlBin, cp, node, "--ttl", "10m")
	token := flagValue(t, joinArgs, "--token")

	// The node's half: the hub's own settings in a base configuration.
	ports := freePorts(t, 2)
	base := config.HubConfiguration{TypeMeta: config.TypeMeta, ListenAddress: "127.0.0.1:" + ports[0], HealthAddress: "127.0.0.1:" + ports[1],
		ProbeInterval: metav1.Duration{Duration: time.Second}}
	basePath := filepath.Join(t.TempDir(), "base.yaml")
	writeYAML(t, basePath, base)
	join := exec.Command(hubBin, append(joinArgs[1:], "--root", root, "--init", "none", "--config", basePath, "--kubelet-kubeconfig", kubelet, "--timeout", "1m")...)
	if out, err := join.CombinedOutput(); err != nil {
		t.Fatalf("sitegrid-hub join: %v\n%s", err, out)
	} else {
		t.Logf("sitegrid-hub join:\n%s", out)
	}
	joined, err := clientcmd.LoadFromFile(kubelet)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := clientcmd.Load(original)
	for name, cluster := range joined.Clusters {
		if cluster.Server != "https://"+base.ListenAddress {
			t.Fatalf("kubelet's cluster %s points at %s, want the hub", name, cluster.Server)
		}
	}
	for name, auth := range before.AuthInfos {
		if !bytes.Equal(joined.AuthInfos[name].ClientCertificateData, auth.ClientCertificateData) {
			t.Fatalf("the join changed the kubelet's credential %s", name)
		}
	}

	hubConfig := filepath.Join(root, "etc", "sitegrid", "hub.yaml")
	hub, err := process.Start(process.Spec{Name: "sitegrid-hub", Path: hubBin, Args: []string{"--config", hubConfig, "--v=2"}, LogFile: filepath.Join(root, "hub.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Stop(5 * time.Second) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hub log:\n%s", process.LogTail(filepath.Join(root, "hub.log"), 40))
		}
	})
	if err := hub.WaitReady(ctx, 100*time.Millisecond, process.HTTPReady(nil, "http://"+base.HealthAddress+"/readyz")); err != nil {
		t.Fatal(err)
	}

	// The kubelet's credential, through the hub: an informer of the
	// node's pods, which must see no error while the certificates renew.
	viaHub, err := clientcmd.BuildConfigFromFlags("", kubelet)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(viaHub)
	var watchErrors atomic.Int64
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
	}))
	pods := factory.Core().V1().Pods().Informer()
	if err := pods.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *toolscache.Reflector, err error) {
		watchErrors.Add(1)
		t.Logf("informer through the hub: %v", err)
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	factory.Start(stop)
	if !toolscache.WaitForCacheSync(stop, pods.HasSynced) {
		t.Fatal("informer through the hub did not sync")
	}

	t.Run("CSRs for another node's names are left for a human", func(t *testing.T) {
		// The same token, asking for the other node's credential.
		bootstrap := kubernetes.NewForConfigOrDie(&rest.Config{Host: cp.Endpoint, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAFile: cp.CAFile}})
		stolen := requestCSR(t, bootstrap, x509.CertificateRequest{Subject: pkix.Name{CommonName: "sitegrid-hub:" + other}},
			certificatesv1.KubeAPIServerClientSignerName, certificatesv1.UsageClientAuth)
		// A user who is not the node asking for its credential.
		stranger, err := cp.WriteKubeconfig("stranger", "stranger", "csr-creators")
		if err != nil {
			t.Fatal(err)
		}
		grantCSRCreate(t, admin, "csr-creators")
		strangerCfg, err := clientcmd.BuildConfigFromFlags("", stranger)
		if err != nil {
			t.Fatal(err)
		}
		wrongRequester := requestCSR(t, kubernetes.NewForConfigOrDie(strangerCfg), x509.CertificateRequest{Subject: pkix.Name{CommonName: "sitegrid-hub:" + node}},
			certificatesv1.KubeAPIServerClientSignerName, certificatesv1.UsageClientAuth)
		for _, name := range []string{stolen, wrongRequester} {
			testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
				evs, err := admin.EventsV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{FieldSelector: "regarding.name=" + name})
				if err != nil {
					return err
				}
				for _, e := range evs.Items {
					if e.Reason == certificates.ReasonNotApproved {
						t.Logf("CSR %s: %s", name, e.Note)
						return nil
					}
				}
				return fmt.Errorf("no %s Event on CSR %s", certificates.ReasonNotApproved, name)
			})
			got, err := admin.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Status.Conditions) > 0 || len(got.Status.Certificate) > 0 {
				t.Fatalf("CSR %s was decided: %+v", name, got.Status.Conditions)
			}
		}
	})

	t.Run("the hub renews both certificates before they expire", func(t *testing.T) {
		pki := filepath.Join(root, "var", "lib", "sitegrid-hub", "pki")
		first := map[string]*x509.Certificate{"client": currentCert(t, pki, "hub-client"), "serving": currentCert(t, pki, "hub-serving")}
		for _, c := range first {
			if c.NotAfter.Sub(c.NotBefore) > signingDuration+10*time.Minute {
				t.Fatalf("certificate lives %s: the signer's duration was not applied", c.NotAfter.Sub(c.NotBefore))
			}
		}
		testenv.Eventually(t, signingDuration+time.Minute, func(context.Context) error {
			for name, pair := range map[string]string{"client": "hub-client", "serving": "hub-serving"} {
				now := currentCert(t, pki, pair)
				if now.SerialNumber.Cmp(first[name].SerialNumber) == 0 {
					return fmt.Errorf("%s certificate not renewed yet (expires %s)", name, first[name].NotAfter.Format(time.TimeOnly))
				}
				if !time.Now().Before(first[name].NotAfter) {
					t.Fatalf("the %s certificate expired before the hub renewed it", name)
				}
			}
			return nil
		})
		renewed := currentCert(t, pki, "hub-serving")
		// New connections get the new serving certificate.
		testenv.Eventually(t, 10*time.Second, func(context.Context) error {
			conn, err := tls.Dial("tcp", base.ListenAddress, &tls.Config{InsecureSkipVerify: true}) // #nosec G402 -- only reading the certificate
			if err != nil {
				return err
			}
			defer conn.Close()
			if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(renewed.SerialNumber) != 0 {
				return fmt.Errorf("the hub serves serial %s, not the renewed %s", got, renewed.SerialNumber)
			}
			return nil
		})
		metrics := httpGet(t, "http://"+base.HealthAddress+"/metrics")
		for name, pair := range map[string]string{"client": "hub-client", "serving": "hub-serving"} {
			want := fmt.Sprintf(`sitegrid_hub_certificate_expiration_timestamp_seconds{certificate="%s"} %d`, name, currentCert(t, pki, pair).NotAfter.Unix())
			if !strings.Contains(metrics, want) {
				t.Errorf("metrics lack %q:\n%s", want, grepLines(metrics, "certificate"))
			}
		}
		// The informer still follows the node's pods.
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "after-renewal", Namespace: metav1.NamespaceDefault},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}}}
		if _, err := admin.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, func(context.Context) error {
			if _, ok, _ := pods.GetStore().GetByKey("default/after-renewal"); !ok {
				return fmt.Errorf("the informer through the hub did not see the new pod")
			}
			return nil
		})
		if n := watchErrors.Load(); n > 0 {
			t.Fatalf("the informer through the hub saw %d watch errors while the hub renewed its certificates", n)
		}
	})

	t.Run("with --init systemd the hub is installed, started and removed", func(t *testing.T) {
		joinWithSystemd(t, cp, admin, ctlBin, hubBin)
	})

	t.Run("leave restores the kubeconfig and removes the hub's files", func(t *testing.T) {
		hub.Stop(5 * time.Second)
		if out, err := exec.Command(hubBin, "leave", "--root", root).CombinedOutput(); err != nil {
			t.Fatalf("sitegrid-hub leave: %v\n%s", err, out)
		}
		after, err := os.ReadFile(kubelet)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(after, original) {
			t.Fatalf("leave left the kubeconfig changed:\n%s", after)
		}
		for _, p := range []string{"etc", "var"} {
			if _, err := os.Stat(filepath.Join(root, p)); !os.IsNotExist(err) {
				t.Errorf("%s still exists after leave (%v)", filepath.Join(root, p), err)
			}
		}
		// The kubelet's credential works directly again.
		direct, err := clientcmd.BuildConfigFromFlags("", kubelet)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kubernetes.NewForConfigOrDie(direct).CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil {
			t.Fatalf("the kubelet's kubeconfig after leave: %v", err)
		}
	})
}

// fakeSystemctl stands in for systemd, which a test host does not run: it
// records every call and runs (enable --now) or kills (disable --now) the
// ExecStart of the unit file the join installed, so the unit itself is
// what starts the hub.
const fakeSystemctl = `#!/bin/sh
echo "$*" >> "$FAKE_SYSTEMD/calls"
case "$1" in
enable) cmd=$(sed -n 's/^ExecStart=//p' "$FAKE_SYSTEMD_UNITS/$3"); $cmd > "$FAKE_SYSTEMD/$3.log" 2>&1 & echo $! > "$FAKE_SYSTEMD/$3.pid" ;;
disable) kill "$(cat "$FAKE_SYSTEMD/$3.pid")" ;;
esac
`

func joinWithSystemd(t *testing.T, cp *controlplane.ControlPlane, admin kubernetes.Interface, ctlBin, hubBin string) {
	ctx := context.Background()
	const node = "edge-join-3"
	if err := controlplane.CreateNode(ctx, admin, controlplane.Node{Name: node, InternalIP: "198.18.9.3"}); err != nil {
		t.Fatal(err)
	}
	root, fake := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "systemctl"), []byte(fakeSystemctl), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if pid, err := os.ReadFile(filepath.Join(fake, "sitegrid-hub.service.pid")); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(pid))); err == nil {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
	})
	kubelet, original := kubeletKubeconfig(t, cp, node)
	joinArgs := joinCommand(t, ctlBin, cp, node)
	ports := freePorts(t, 2)
	base := config.HubConfiguration{TypeMeta: config.TypeMeta, ListenAddress: "127.0.0.1:" + ports[0], HealthAddress: "127.0.0.1:" + ports[1]}
	basePath := filepath.Join(t.TempDir(), "base.yaml")
	writeYAML(t, basePath, base)
	env := append(os.Environ(), "PATH="+fake+":"+os.Getenv("PATH"), "FAKE_SYSTEMD="+fake, "FAKE_SYSTEMD_UNITS="+filepath.Join(root, "etc", "systemd", "system"))
	join := exec.Command(hubBin, append(joinArgs[1:], "--root", root, "--config", basePath, "--kubelet-kubeconfig", kubelet, "--timeout", "1m")...)
	join.Env = env
	if out, err := join.CombinedOutput(); err != nil {
		t.Fatalf("sitegrid-hub join --init systemd: %v\n%s\nhub: %s", err, out, process.LogTail(filepath.Join(fake, "sitegrid-hub.service.log"), 20))
	}
	unit, err := os.ReadFile(filepath.Join(root, "etc", "systemd", "system", "sitegrid-hub.service"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "ExecStart=" + filepath.Join(root, "usr/local/bin/sitegrid-hub") + " --config " + filepath.Join(root, "etc/sitegrid/hub.yaml"); !strings.Contains(string(unit), want) {
		t.Errorf("the installed unit lacks %q:\n%s", want, unit)
	}
	if got := httpGet(t, "http://"+base.HealthAddress+"/readyz"); !strings.HasPrefix(got, "ok: online") {
		t.Errorf("the hub systemd started answers /readyz %q", got)
	}
	leave := exec.Command(hubBin, "leave", "--root", root)
	leave.Env = env
	if out, err := leave.CombinedOutput(); err != nil {
		t.Fatalf("sitegrid-hub leave: %v\n%s", err, out)
	}
	calls, err := os.ReadFile(filepath.Join(fake, "calls"))
	if err != nil {
		t.Fatal(err)
	}
	want := "daemon-reload\nenable --now sitegrid-hub.service\ndaemon-reload\nrestart kubelet.service\n" +
		"disable --now sitegrid-hub.service\ndaemon-reload\nrestart kubelet.service\n"
	if string(calls) != want {
		t.Errorf("systemctl calls:\n%s\nwant:\n%s", calls, want)
	}
	if after, _ := os.ReadFile(kubelet); !bytes.Equal(after, original) {
		t.Errorf("leave left the kubeconfig changed")
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("leave left %v in the root", entries)
	}
}

// kubeletKubeconfig writes node's kubelet kubeconfig, direct to the cloud,
// and returns it with its bytes.
func kubeletKubeconfig(t *testing.T, cp *controlplane.ControlPlane, node string) (string, []byte) {
	t.Helper()
	path, err := cp.WriteKubeconfigAt("kubelet-"+node, cp.Endpoint, "system:node:"+node, "system:nodes")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, data
}

// joinCommand runs `sitegridctl node join-command node` and returns the
// command it printed, split.
func joinCommand(t *testing.T, ctlBin string, cp *controlplane.ControlPlane, node string, args ...string) []string {
	t.Helper()
	out, err := exec.Command(ctlBin, append([]string{"node", "join-command", node, "--kubeconfig", cp.AdminKubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("node join-command: %v\n%s", err, out)
	}
	joinArgs := strings.Fields(strings.TrimSpace(string(out)))
	if len(joinArgs) < 2 || joinArgs[0] != "sitegrid-hub" || joinArgs[1] != "join" {
		t.Fatalf("join-command printed %q", out)
	}
	return joinArgs
}

func flagValue(t *testing.T, args []string, name string) string {
	t.Helper()
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	t.Fatalf("%s not in %q", name, args)
	return ""
}

func freePorts(t *testing.T, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		p, err := controlplane.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = strconv.Itoa(p)
	}
	return out
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// requestCSR creates a CSR for template as client and returns its name.
func requestCSR(t *testing.T, client kubernetes.Interface, template x509.CertificateRequest, signer string, usage certificatesv1.KeyUsage) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &template, key)
	if err != nil {
		t.Fatal(err)
	}
	name, _, err := csr.RequestCertificateWithContext(context.Background(), client, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), "", signer, nil,
		[]certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, usage}, key)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

func grantCSRCreate(t *testing.T, admin kubernetes.Interface, group string) {
	t.Helper()
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "test:" + group},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node-bootstrapper"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: group}},
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(context.Background(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func currentCert(t *testing.T, dir, pair string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, pair+"-current.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			t.Fatalf("no certificate in %s", pair)
		}
		if block.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url) // #nosec G107 -- a test's own endpoint
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func grepLines(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
