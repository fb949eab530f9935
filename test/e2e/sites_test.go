package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/config"
	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/manager"
	"github.com/sitegrid/sitegrid/internal/testenv"
	"github.com/sitegrid/sitegrid/internal/testenv/testmanager"
)

// TestNodeGroupAutoFind: on the full control plane, a NodeGroup with
// autoFindNodeKeys [zone] makes one unit per zone and labels the nodes; a node
// of a new zone gets its unit; a node that stops heartbeating is counted in
// readyRate; deleting the group removes exactly its labels, and the garbage
// collector removes its units.
func TestNodeGroupAutoFind(t *testing.T) {
	cp := testenv.StartControlPlane(t, testenv.ControlPlaneOptions{
		NodeLeaseSeconds:      10,
		ControllerManagerArgs: []string{"--node-monitor-grace-period=20s", "--node-monitor-period=2s"},
	})
	ctx := context.Background()
	cs, c := startSitegrid(t, cp)
	for _, n := range []controlplane.Node{
		{Name: "a-1", InternalIP: "198.18.1.10", Labels: map[string]string{"zone": "a", "owner": "ops"}},
		{Name: "a-2", InternalIP: "198.18.1.11", Labels: map[string]string{"zone": "a", "owner": "ops"}, OwnKubelet: true},
		{Name: "b-1", InternalIP: "198.18.2.10", Labels: map[string]string{"zone": "b", "owner": "ops"}},
	} {
		if err := controlplane.CreateNode(ctx, cs, n); err != nil {
			t.Fatal(err)
		}
	}
	a2Kubelet, err := cp.StartNodeKwok(ctx, "a-2")
	if err != nil {
		t.Fatal(err)
	}
	if err := controlplane.WaitNodesReady(ctx, cs, time.Minute, "a-1", "a-2", "b-1"); err != nil {
		t.Fatal(err)
	}
	group := &sitev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: "zones"}, Spec: sitev1.NodeGroupSpec{AutoFindNodeKeys: []string{"zone"}}}
	if err := c.Create(ctx, group); err != nil {
		t.Fatal(err)
	}
	nodeLabel := func(node, want string) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
			n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			got, has := n.Labels["zones"]
			if (want == "" && has) || got != want {
				return fmt.Errorf("node %s has zones=%q, want %q", node, got, want)
			}
			if n.Labels["owner"] != "ops" {
				return fmt.Errorf("node %s lost its owner label", node)
			}
			return nil
		})
	}
	readyRate := func(unit, want string) {
		t.Helper()
		testenv.Eventually(t, 90*time.Second, func(ctx context.Context) error {
			u := &sitev1.NodeUnit{}
			if err := c.Get(ctx, types.NamespacedName{Name: unit}, u); err != nil {
				return err
			}
			if u.Status.ReadyRate != want {
				return fmt.Errorf("unit %s readyRate %q, want %q", unit, u.Status.ReadyRate, want)
			}
			return nil
		})
	}
	nodeLabel("a-1", "zones-a")
	nodeLabel("a-2", "zones-a")
	nodeLabel("b-1", "zones-b")
	readyRate("zones-a", "2/2")
	readyRate("zones-b", "1/1")

	// A node of a new zone joins: its unit appears.
	if err := controlplane.CreateNode(ctx, cs, controlplane.Node{Name: "c-1", InternalIP: "198.18.3.10", Labels: map[string]string{"zone": "c", "owner": "ops"}}); err != nil {
		t.Fatal(err)
	}
	nodeLabel("c-1", "zones-c")
	readyRate("zones-c", "1/1")

	// a-2's kubelet stops: the node lifecycle controller marks it NotReady.
	a2Kubelet.Stop(5 * time.Second)
	readyRate("zones-a", "1/2")

	// kubectl shows type and ready rate.
	out, err := exec.Command(testenv.Binaries(t).Path(kubebin.Kubectl), "--kubeconfig", cp.AdminKubeconfig, "get", "nodeunits").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get nodeunits: %v\n%s", err, out)
	}
	for _, want := range []string{"TYPE", "READY", "zones-a", "edge", "1/2"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("kubectl get nodeunits lacks %q:\n%s", want, out)
		}
	}

	// Deleting the group removes exactly the label it added, and the garbage
	// collector removes its units.
	if err := c.Delete(ctx, group); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a-1", "a-2", "b-1", "c-1"} {
		nodeLabel(name, "")
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		for _, name := range []string{"zones-a", "zones-b", "zones-c"} {
			err := c.Get(ctx, types.NamespacedName{Name: name}, &sitev1.NodeUnit{})
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("unit %s: %v", name, err)
			}
		}
		return nil
	})
}

// startSitegrid installs sitegrid's CRDs and RBAC into cp and runs the
// manager in the test process; it returns a clientset and a client that
// knows sitegrid's types.
func startSitegrid(t *testing.T, cp *controlplane.ControlPlane) (kubernetes.Interface, client.Client) {
	t.Helper()
	if err := lab.InstallManifests(context.Background(), cp.RESTConfig(), config.Manifests); err != nil {
		t.Fatal(err)
	}
	c := testmanager.Start(t, cp.RESTConfig(), manager.Options{})
	cs, err := cp.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	return cs, c
}
