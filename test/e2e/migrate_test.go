package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	"github.com/sitegrid/sitegrid/config"
	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/manager"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/process"
	"github.com/sitegrid/sitegrid/internal/testenv"
	"github.com/sitegrid/sitegrid/internal/testenv/testmanager"
)

// TestMigrateFromSuperEdge makes a cluster SuperEdge's way — SuperEdge's
// own site-manager and application-grid-controller (v0.9.0, built from its
// module) install their CRDs, label the nodes and make the grids' children
// from a user's objects, their pods running — then stops them, installs
// sitegrid over SuperEdge's CRDs as docs/migrate-from-superedge.md says, and
// checks that every child is adopted as the same object, every pod is the
// same pod, the Service keeps its cluster IP, a later template change is
// rolled out by sitegrid, and SuperEdge's v1alpha1 demos apply with kubectl.
func TestMigrateFromSuperEdge(t *testing.T) {
	cp := testenv.StartControlPlane(t, testenv.ControlPlaneOptions{})
	ctx := context.Background()
	cs, err := cp.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := testenv.Binaries(t).Path(kubebin.Kubectl)
	superEdge := testenv.SuperEdgeBinaries(t)

	// The user's nodes: one per site, labelled with its site.
	sites := []string{"site-1", "site-2"}
	var nodes []string
	for i, site := range sites {
		name := site + "-node-1"
		nodes = append(nodes, name)
		if err := controlplane.CreateNode(ctx, cs, controlplane.Node{
			Name: name, InternalIP: fmt.Sprintf("198.18.%d.10", i+1),
			Labels: map[string]string{"site": site, "node-role.kubernetes.io/Edge": ""},
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := controlplane.WaitNodesReady(ctx, cs, time.Minute, nodes...); err != nil {
		t.Fatal(err)
	}

	// SuperEdge runs: its controllers, its CRDs, the user's objects.
	stopSuperEdge := startSuperEdgeControllers(t, cp, superEdge, kubectl)
	applyFile(t, kubectl, cp.AdminKubeconfig, filepath.Join(testenv.RepoRoot(t), "test", "testdata", "superedge", "cluster.yaml"))

	// What SuperEdge made of them: the group's label and the unit's own
	// label (`<unit>: nodeunits.superedge.io`, site-manager v0.9's record of
	// membership) on the nodes, the children and their pods.
	c, err := client.New(cp.RESTConfig(), client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) error {
		for i, name := range nodes {
			n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if n.Labels["location"] != sites[i] || n.Labels[sites[i]] != "nodeunits.superedge.io" {
				return fmt.Errorf("node %s not labelled by site-manager yet: labels %v annotations %v", name, n.Labels, n.Annotations)
			}
		}
		for _, site := range sites {
			for name, obj := range map[string]client.Object{"echo-" + site: &appsv1.Deployment{}, "db-" + site: &appsv1.StatefulSet{}} {
				if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: name}, obj); err != nil {
					return fmt.Errorf("application-grid-controller's child %s: %w", name, err)
				}
			}
		}
		_, err := cs.CoreV1().Services("default").Get(ctx, "echo-svc", metav1.GetOptions{})
		return err
	})
	before := runningPods(t, cs, 6, "echo:1", "db:1")
	stopSuperEdge()

	uids := childUIDs(t, c)
	replicaSets := replicaSetNames(t, cs)
	svc, err := cs.CoreV1().Services("default").Get(ctx, "echo-svc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clusterIP := svc.Spec.ClusterIP
	if svc.Annotations[gridv1.AnnotationTopologyKeys] == "" {
		t.Errorf("SuperEdge's Service has no %s annotation: %v", gridv1.AnnotationTopologyKeys, svc.Annotations)
	}

	// sitegrid's CRDs take over SuperEdge's of the same names (step 3 of
	// the migration: server-side, conflicts forced); their objects stay.
	if err := lab.InstallManifests(ctx, cp.RESTConfig(), config.Manifests); err != nil {
		t.Fatal(err)
	}
	dg := &gridv1.DeploymentGrid{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"}}
	// sitegrid starts; SuperEdge's controllers are gone.
	startSitegridWithConversion(t, cp)

	// Every child adopted: sitegrid's unit label and template hash on it.
	testenv.Eventually(t, 90*time.Second, func(ctx context.Context) error {
		for _, site := range sites {
			for name, obj := range map[string]client.Object{"echo-" + site: &appsv1.Deployment{}, "db-" + site: &appsv1.StatefulSet{}} {
				if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: name}, obj); err != nil {
					return err
				}
				if obj.GetLabels()[gridv1.LabelGridUnit] != site || obj.GetAnnotations()[gridv1.AnnotationTemplateHash] == "" {
					return fmt.Errorf("%s not adopted: labels %v annotations %v", name, obj.GetLabels(), obj.GetAnnotations())
				}
			}
		}
		s, err := cs.CoreV1().Services("default").Get(ctx, "echo-svc", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s.Annotations[gridv1.AnnotationTemplateHash] == "" {
			return fmt.Errorf("echo-svc not adopted: annotations %v", s.Annotations)
		}
		return nil
	})
	gridCondition(t, c, dg, gridv1.ConditionAvailable, metav1.ConditionTrue, "all 2 units")
	testenv.Eventually(t, 60*time.Second, func(ctx context.Context) error {
		for _, site := range sites {
			d := &appsv1.Deployment{}
			if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "echo-" + site}, d); err != nil {
				return err
			}
			if d.Status.ObservedGeneration != d.Generation {
				return fmt.Errorf("%s: generation %d observed %d", d.Name, d.Generation, d.Status.ObservedGeneration)
			}
		}
		return nil
	})

	if got := childUIDs(t, c); !maps.Equal(got, uids) {
		t.Errorf("children after adoption %v, before %v: not the same objects", got, uids)
	}
	if got := replicaSetNames(t, cs); !slices.Equal(got, replicaSets) {
		t.Errorf("ReplicaSets after adoption %v, before %v: the pod template changed", got, replicaSets)
	}
	if after := runningPods(t, cs, 6, "echo:1", "db:1"); !maps.Equal(after, before) {
		t.Errorf("pods after adoption %v, before %v: pods were replaced", after, before)
	}
	if s, err := cs.CoreV1().Services("default").Get(ctx, "echo-svc", metav1.GetOptions{}); err != nil || s.Spec.ClusterIP != clusterIP || s.UID != svc.UID {
		t.Errorf("Service after adoption: %v, cluster IP %q uid %s, before %q %s", err, s.Spec.ClusterIP, s.UID, clusterIP, svc.UID)
	}
	// The nodes' list of units is sitegrid's now: the node's site, and
	// unit-node-all, which site-manager made and sitegrid keeps.
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		n, err := cs.CoreV1().Nodes().Get(ctx, "site-1-node-1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := n.Annotations[sitev1.AnnotationNodeUnits]; got != `["site-1","unit-node-all"]` {
			return fmt.Errorf("node site-1-node-1: %s=%s", sitev1.AnnotationNodeUnits, got)
		}
		return nil
	})

	// A template change: rolled out by sitegrid to the adopted children.
	testenv.Modify(t, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(dg), dg); err != nil {
			return err
		}
		dg.Spec.Template.Template.Spec.Containers[0].Image = "echo:2"
		return c.Update(ctx, dg)
	})
	runningPods(t, cs, 6, "echo:2", "db:1")
	if got := childUIDs(t, c); !maps.Equal(got, uids) {
		t.Errorf("children after the rollout %v, before %v", got, uids)
	}

	// SuperEdge's own v1alpha1 demos apply unchanged, and kubectl lists them
	// in v1alpha1.
	demos := filepath.Join(testenv.RepoRoot(t), "test", "testdata", "superedge")
	for _, f := range []string{"nodeunit_demo.yaml", "nodegroup_demo.yaml"} {
		if out, err := exec.Command(kubectl, "--kubeconfig", cp.AdminKubeconfig, "apply", "-f", filepath.Join(demos, f)).CombinedOutput(); err != nil {
			t.Fatalf("kubectl apply -f %s: %v\n%s", f, err, out)
		}
	}
	out, err := exec.Command(kubectl, "--kubeconfig", cp.AdminKubeconfig, "get", "nodeunits.v1alpha1.site.superedge.io").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nodeunit-demo") || !strings.Contains(string(out), "site-1") {
		t.Errorf("kubectl get nodeunits.v1alpha1.site.superedge.io: %v\n%s", err, out)
	}
	out, err = exec.Command(kubectl, "--kubeconfig", cp.AdminKubeconfig, "get", "nodegroups.v1alpha1.site.superedge.io", "nodegroup-demo", "-o", "jsonpath={.spec.workload[0].name}").CombinedOutput()
	if err != nil || string(out) != "demo" {
		t.Errorf("the demo group's workload read back in v1alpha1: %v %q", err, out)
	}
}

// startSuperEdgeControllers runs SuperEdge's site-manager and
// application-grid-controller against the control plane, as cluster
// administrators (SuperEdge's own RBAC is broader still), and returns what
// stops them. site-manager installs the site CRDs itself, with its
// conversion webhook, which does not serve here: it reads its certificate
// from /etc/site-manager. Nothing converts while SuperEdge runs, since its
// controllers read and write v1alpha2 only. application-grid-controller reads
// its CRDs from files at /etc/superedge, so they are applied for it, as
// SuperEdge's installer does.
func startSuperEdgeControllers(t *testing.T, cp *controlplane.ControlPlane, superEdge kubebin.Set, kubectl string) (stop func()) {
	t.Helper()
	for _, f := range []string{"superedge.io_deploymentgrids.yaml", "superedge.io_statefulsetgrids.yaml", "superedge.io_servicegrids.yaml"} {
		applyFile(t, kubectl, cp.AdminKubeconfig, superEdge.Path(filepath.Join(kubebin.SuperEdgeManifests, f)))
	}
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	port, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	var procs []*process.Process
	stop = func() {
		for _, p := range procs {
			p.Stop(10 * time.Second)
		}
		procs = nil
	}
	t.Cleanup(stop)
	for _, spec := range []process.Spec{
		{Name: kubebin.SuperEdgeSiteManager, Path: superEdge.Path(kubebin.SuperEdgeSiteManager),
			Args: []string{"--kubeconfig", cp.AdminKubeconfig, "--leader-elect=false"},
			Env:  []string{fmt.Sprintf("CONVERT_WEBHOOK_SERVER=https://127.0.0.1:%d/v1", port), "CA_CRT=" + base64.StdEncoding.EncodeToString(ca)}},
		{Name: kubebin.SuperEdgeGridController, Path: superEdge.Path(kubebin.SuperEdgeGridController),
			Args: []string{"--kubeconfig", cp.AdminKubeconfig, "--leader-elect=false"}},
	} {
		spec.LogFile = filepath.Join(cp.Dir, "logs", spec.Name+".log")
		p, err := process.Start(spec)
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
	}
	// The site CRDs are site-manager's to install: wait for them.
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		for _, p := range procs {
			if done, _ := p.Exited(); done {
				return fmt.Errorf("%s exited:\n%s", p.Spec.Name, process.LogTail(p.Spec.LogFile, 20))
			}
		}
		out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", cp.AdminKubeconfig, "get", "nodeunits.v1alpha2.site.superedge.io").CombinedOutput()
		if err != nil {
			return fmt.Errorf("site-manager's CRDs: %v: %s", err, out)
		}
		return nil
	})
	return stop
}

func applyFile(t *testing.T, kubectl, kubeconfig, file string) {
	t.Helper()
	if out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply -f %s: %v\n%s", file, err, out)
	}
}

// startSitegridWithConversion runs the manager in the test process with its
// webhook on loopback, a certificate of the cluster CA, and the CRDs'
// conversion registered as the lab registers it.
func startSitegridWithConversion(t *testing.T, cp *controlplane.ControlPlane) {
	t.Helper()
	port, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	serving, err := cp.IssueCert(pki.LeafRequest{CommonName: "sitegrid-manager-webhook", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pki.WriteKeyPair(dir, "tls", serving.Cert, serving.Key); err != nil {
		t.Fatal(err)
	}
	testmanager.Start(t, cp.RESTConfig(), manager.Options{WebhookPort: port, WebhookCertDir: dir})
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.RegisterConversion(context.Background(), cp.RESTConfig(), fmt.Sprintf("https://127.0.0.1:%d%s", port, manager.ConversionPath), ca); err != nil {
		t.Fatal(err)
	}
}

// runningPods waits until count pods run in default, all with one of the
// images, and returns them by name with their UIDs.
func runningPods(t *testing.T, cs kubernetes.Interface, count int, images ...string) map[string]types.UID {
	t.Helper()
	var got map[string]types.UID
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) error {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		got = map[string]types.UID{}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || !slices.Contains(images, p.Spec.Containers[0].Image) {
				return fmt.Errorf("pod %s: %s, image %s, deleting %v", p.Name, p.Status.Phase, p.Spec.Containers[0].Image, p.DeletionTimestamp != nil)
			}
			got[p.Name] = p.UID
		}
		if len(got) != count {
			return fmt.Errorf("%d pods, want %d", len(got), count)
		}
		return nil
	})
	return got
}

// childUIDs are the grids' Deployments and StatefulSets by name.
func childUIDs(t *testing.T, c client.Client) map[string]types.UID {
	t.Helper()
	out := map[string]types.UID{}
	var deps appsv1.DeploymentList
	var sets appsv1.StatefulSetList
	if err := c.List(context.Background(), &deps, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	if err := c.List(context.Background(), &sets, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Items {
		out["Deployment/"+d.Name] = d.UID
	}
	for _, s := range sets.Items {
		out["StatefulSet/"+s.Name] = s.UID
	}
	return out
}

func replicaSetNames(t *testing.T, cs kubernetes.Interface) []string {
	t.Helper()
	list, err := cs.AppsV1().ReplicaSets("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, rs := range list.Items {
		names = append(names, rs.Name)
	}
	slices.Sort(names)
	return names
}
