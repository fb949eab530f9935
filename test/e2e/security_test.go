package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/internal/controlplane"
	labpkg "github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestLabNodeIsolation acts as a compromised node: with its kubelet's own
// certificate, through its own hub, it cannot write another node, delete a
// pod of another node, or move itself into another site; the control
// plane's etcd refuses anyone without an etcd client certificate, and the
// manager's webhook listens on loopback only.
func TestLabNodeIsolation(t *testing.T) {
	l := upLab(t, "--sites", "2", "--nodes-per-site", "1")
	_, admin, c := l.clients()
	// A request through the hub that hangs fails the test, not the run.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const self, other = "site-1-node-1", "site-2-node-1"
	kubelet := labClient(t, filepath.Join(l.workdir, "controlplane", "kubeconfig", "kubelet-"+self+".kubeconfig"), nil)

	forbidden := func(what string, err error, want string) {
		t.Helper()
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want 403 from the apiserver naming %q", what, err, want)
		}
	}
	statusPatch := []byte(`{"status":{"conditions":[{"type":"Ready","status":"False","reason":"Forged","message":"forged by another node"}]}}`)
	_, err := kubelet.CoreV1().Nodes().Patch(ctx, other, types.StrategicMergePatchType, statusPatch, metav1.PatchOptions{}, "status")
	forbidden("patch another node's status", err, "node \""+self+"\" is not allowed to modify node \""+other+"\"")

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "victim", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: other, Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}},
	}
	if _, err := admin.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// NodeRestriction judges a pod delete by the pod in its informer, which
	// may not have the new pod yet: until then it answers NotFound.
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		err = kubelet.CoreV1().Pods("default").Delete(ctx, "victim", metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return err
		}
		return nil
	})
	forbidden("delete a pod of another node", err, "can only delete pods with spec.nodeName set to itself")
	if _, err := admin.CoreV1().Pods("default").Get(ctx, "victim", metav1.GetOptions{}); err != nil {
		t.Errorf("the other node's pod is gone: %v", err)
	}

	move := []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:"site-2"}}}`, labpkg.SiteLabel))
	_, err = kubelet.CoreV1().Nodes().Patch(ctx, self, types.MergePatchType, move, metav1.PatchOptions{})
	forbidden("relabel its own site", err, "may not change its own labels "+labpkg.SiteLabel)
	_, err = kubelet.CoreV1().Nodes().Patch(ctx, self, types.MergePatchType, move, metav1.PatchOptions{}, "status")
	forbidden("relabel its own site through status", err, labpkg.SiteLabel)
	leave := []byte(`{"metadata":{"labels":{"lab":null}}}`)
	_, err = kubelet.CoreV1().Nodes().Patch(ctx, self, types.MergePatchType, leave, metav1.PatchOptions{})
	forbidden("remove its unit label", err, "lab")
	err = kubelet.CoreV1().Nodes().Delete(ctx, self, metav1.DeleteOptions{})
	// The Node authorizer refuses it already; sitegrid-node-labels would too.
	forbidden("delete its own Node", err, "")
	// Its own writes that change no membership still pass.
	if _, err := kubelet.CoreV1().Nodes().Patch(ctx, self, types.MergePatchType, []byte(`{"metadata":{"annotations":{"example.com/note":"ok"}}}`), metav1.PatchOptions{}); err != nil {
		t.Errorf("annotate its own node: %v", err)
	}

	n, err := admin.CoreV1().Nodes().Get(ctx, self, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels[labpkg.SiteLabel] != "site-1" || n.Labels["lab"] != "lab-site-1" {
		t.Errorf("node %s labels %v, want it still in site-1", self, n.Labels)
	}
	// lab up returns once the units have counted their nodes.
	unit := &sitev1.NodeUnit{}
	if err := c.Get(ctx, types.NamespacedName{Name: "lab-site-2"}, unit); err != nil {
		t.Fatal(err)
	}
	if unit.Status.ReadyRate != "1/1" {
		t.Errorf("unit lab-site-2 counts %s, want 1/1 (the other node must not have joined)", unit.Status.ReadyRate)
	}

	// etcd: nothing but the apiserver's client certificate gets in.
	data, err := os.ReadFile(filepath.Join(l.workdir, "lab.json"))
	if err != nil {
		t.Fatal(err)
	}
	var state labpkg.State
	if err := json.Unmarshal(data, &state); err != nil {
		t.Fatal(err)
	}
	etcdPort := 0
	for _, comp := range state.Components {
		if comp.Name == controlplane.Etcd {
			etcdPort = comp.Port
		}
	}
	if etcdPort == 0 {
		t.Fatalf("no etcd in the lab's components %+v", state.Components)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	body := strings.NewReader(`{"key":"AA==","range_end":"AA=="}`)
	if resp, err := hc.Post("http://127.0.0.1:"+strconv.Itoa(etcdPort)+"/v3/kv/range", "application/json", body); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("etcd answered a plain-HTTP range request")
		}
	}
	tlsNoCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := tlsNoCert.Post("https://127.0.0.1:"+strconv.Itoa(etcdPort)+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"AA==","range_end":"AA=="}`)); err == nil {
		resp.Body.Close()
		t.Errorf("etcd answered a TLS client without a certificate: %s", resp.Status)
	}

	// The manager's webhook: loopback only.
	if !strings.Contains(strings.Join(processArgs(t, state, "sitegrid-manager"), " "), "--webhook-bind-address=127.0.0.1") {
		t.Errorf("the lab's sitegrid-manager does not bind its webhook to loopback")
	}
}

// processArgs reads a lab component's command line.
func processArgs(t *testing.T, state labpkg.State, name string) []string {
	t.Helper()
	for _, comp := range state.Components {
		if comp.Name == name {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", comp.PID))
			if err != nil {
				t.Fatal(err)
			}
			return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		}
	}
	t.Fatalf("no %s in the lab", name)
	return nil
}
