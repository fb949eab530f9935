// Package e2e holds the end-to-end tests: a full local control plane
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) built
// from source, driven by real clients (client-go, kubectl, sitegridctl).
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestDeploymentRunsOnSimulatedNodes: three simulated nodes register, a
// Deployment's pods are scheduled onto them, run with IPs, and appear in the
// Service's EndpointSlice, all through the real controllers.
func TestDeploymentRunsOnSimulatedNodes(t *testing.T) {
	cp := testenv.StartControlPlane(t, testenv.ControlPlaneOptions{})
	cs, err := cp.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	nodes := map[string]string{"edge-a": "198.18.1.10", "edge-b": "198.18.1.11", "edge-c": "198.18.2.10"}
	var names []string
	for name, ip := range nodes {
		if err := controlplane.CreateNode(ctx, cs, controlplane.Node{Name: name, InternalIP: ip}); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	if err := controlplane.WaitNodesReady(ctx, cs, time.Minute, names...); err != nil {
		t.Fatal(err)
	}

	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					// kwok nodes carry no taints, but a real edge node often
					// does; spreading proves the scheduler used all three.
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: corev1.LabelHostname, WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
					}},
					Containers: []corev1.Container{{Name: "web", Image: "nginx", Ports: []corev1.ContainerPort{{ContainerPort: 80}}}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}}},
	}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var podIPs []string
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) error {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return err
		}
		podIPs = podIPs[:0]
		onNode := map[string]bool{}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				return fmt.Errorf("pod %s is %s with IP %q", p.Name, p.Status.Phase, p.Status.PodIP)
			}
			if _, ok := nodes[p.Spec.NodeName]; !ok {
				return fmt.Errorf("pod %s on unexpected node %q", p.Name, p.Spec.NodeName)
			}
			onNode[p.Spec.NodeName] = true
			podIPs = append(podIPs, p.Status.PodIP)
		}
		if len(pods.Items) != 3 || len(onNode) != 3 {
			return fmt.Errorf("%d pods on %d nodes, want 3 on 3", len(pods.Items), len(onNode))
		}
		return nil
	})

	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		slices, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil {
			return err
		}
		var ready []string
		for _, s := range slices.Items {
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready && ep.NodeName != nil {
					ready = append(ready, ep.Addresses...)
				}
			}
		}
		sort.Strings(ready)
		want := append([]string(nil), podIPs...)
		sort.Strings(want)
		if fmt.Sprint(ready) != fmt.Sprint(want) {
			return fmt.Errorf("ready endpoints %v, want pod IPs %v", ready, want)
		}
		return nil
	})
}

// TestInstallManifestsWithKubectl installs sitegrid the way README says,
// with the real kubectl and kustomize: `kubectl apply --server-side -k
// config/default` (after cert-manager's kinds): the site CRDs are converted
// by the manager's webhook, whose CA cert-manager fills.
func TestInstallManifestsWithKubectl(t *testing.T) {
	cp := testenv.StartControlPlane(t, testenv.ControlPlaneOptions{})
	kubectl := testenv.Binaries(t).Path(kubebin.Kubectl)
	root := testenv.RepoRoot(t)
	out, err := exec.Command(kubectl, "--kubeconfig", cp.AdminKubeconfig, "apply", "--server-side", "-f", root+"/test/e2e/testdata/cert-manager-kinds.yaml").CombinedOutput()
	if err == nil {
		out, err = exec.Command(kubectl, "--kubeconfig", cp.AdminKubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
			"crd/issuers.cert-manager.io", "crd/certificates.cert-manager.io").CombinedOutput()
	}
	if err != nil {
		t.Fatalf("cert-manager's kinds: %v\n%s", err, out)
	}
	out, err = exec.Command(kubectl, "--kubeconfig", cp.AdminKubeconfig, "apply", "--server-side", "-k", root+"/config/default").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply -k config/default: %v\n%s", err, out)
	}
	out, err = exec.Command(kubectl, "--kubeconfig", cp.AdminKubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/nodeunits.site.superedge.io", "crd/nodegroups.site.superedge.io", "crd/deploymentgrids.superedge.io").CombinedOutput()
	if err != nil {
		t.Fatalf("CRDs not established: %v\n%s", err, out)
	}
	for _, crd := range lab.SiteCRDs {
		out, err := exec.Command(kubectl, "--kubeconfig", cp.AdminKubeconfig, "get", "crd", crd, "-o",
			`jsonpath={.spec.conversion.strategy} {.spec.conversion.webhook.clientConfig.service.name} {.spec.conversion.webhook.clientConfig.service.path} {.metadata.annotations.cert-manager\.io/inject-ca-from}`).CombinedOutput()
		if want := "Webhook sitegrid-webhook /convert sitegrid-system/sitegrid-webhook"; err != nil || string(out) != want {
			t.Errorf("%s conversion: %v %q, want %q", crd, err, out, want)
		}
	}
	cs, err := cp.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dep, err := cs.AppsV1().Deployments("sitegrid-system").Get(ctx, "sitegrid-manager", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("manager Deployment: %v", err)
	}
	if sa := dep.Spec.Template.Spec.ServiceAccountName; sa != "sitegrid-manager" {
		t.Errorf("manager runs as %q, want the sitegrid-manager ServiceAccount", sa)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, "sitegrid-manager", metav1.GetOptions{}); err != nil {
		t.Errorf("ClusterRoleBinding: %v", err)
	}
	if _, err := cs.RbacV1().RoleBindings("sitegrid-system").Get(ctx, "sitegrid-manager", metav1.GetOptions{}); err != nil {
		t.Errorf("RoleBinding: %v", err)
	}
	for _, name := range []string{"sitegrid-node-labels", "sitegrid-node-group-keys"} {
		if _, err := cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("ValidatingAdmissionPolicy %s: %v", name, err)
		}
		if _, err := cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("ValidatingAdmissionPolicyBinding %s: %v", name, err)
		}
	}
}

// TestHealthWebhookOverlay: config/health-webhook renders with kustomize
// (kubectl's) into the default install plus the webhook, its Service and
// certificate, and a manager that serves it; the apiserver accepts the
// webhook registration (cert-manager, which fills its CA, is not here).
func TestHealthWebhookOverlay(t *testing.T) {
	cp := testenv.StartControlPlane(t, testenv.ControlPlaneOptions{})
	kubectl := testenv.Binaries(t).Path(kubebin.Kubectl)
	out, err := exec.Command(kubectl, "kustomize", testenv.RepoRoot(t)+"/config/health-webhook").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize config/health-webhook: %v\n%s", err, out)
	}
	for _, want := range []string{"kind: MutatingWebhookConfiguration", "kind: ValidatingWebhookConfiguration", "kind: Certificate", "name: sitegrid-webhook", "--webhook-cert-dir=/etc/sitegrid/webhook", "name: sitegrid-health"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the overlay lacks %q", want)
		}
	}
	for _, file := range []string{"webhook.yaml", "reports-webhook.yaml"} {
		webhook, err := os.ReadFile(testenv.RepoRoot(t) + "/config/health-webhook/" + file)
		if err != nil {
			t.Fatal(err)
		}
		apply := exec.Command(kubectl, "--kubeconfig", cp.AdminKubeconfig, "apply", "--server-side", "-f", "-")
		apply.Stdin = strings.NewReader(string(webhook))
		if out, err := apply.CombinedOutput(); err != nil {
			t.Errorf("the apiserver refuses the registration in %s: %v\n%s", file, err, out)
		}
	}
}
