package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/health"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

const healthNS = "health"

// tolerationSeconds is how long the test's pods tolerate an unreachable
// node before Kubernetes evicts them (the default is 300 s).
const tolerationSeconds = 5

// TestLabDistributedHealth: the real kube-controller-manager with its node
// lifecycle controller on, short grace and toleration periods, and two
// units of three nodes. A node cut from the cloud whose peers still see it
// goes NotReady but keeps its pods, Ready in the EndpointSlice, well past
// the toleration; a node that is powered off (dead to its peers) is evicted
// as usual; a whole unit cut off keeps all its pods; after healing nothing
// restarted.
func TestLabDistributedHealth(t *testing.T) {
	l := upLab(t, "--sites", "2", "--nodes-per-site", "3", "--node-monitor-grace-period", "8s")
	kubeconfig, admin, c := l.clients()
	site1, site2 := lab.UnitName("site-1"), lab.UnitName("site-2")
	cutOff, dead := lab.NodeName("site-1", 0), lab.NodeName("site-1", 1)
	seedHealth(t, c)

	// Every node runs one pod, Ready in the Service's slice; both units
	// report every member alive.
	var start map[string]corev1.Pod
	testenv.Eventually(t, 90*time.Second, func(ctx context.Context) error {
		pods, err := podsByNode(ctx, admin)
		if err != nil {
			return err
		}
		if len(pods) != 6 {
			return fmt.Errorf("pods run on %d nodes, want 6", len(pods))
		}
		for _, unit := range []string{site1, site2} {
			if err := verdictsAre(ctx, c, unit, map[string]health.Verdict{}); err != nil {
				return err
			}
		}
		start = pods
		return readyInSlices(ctx, admin, pods)
	})

	// Every report above passed the reports webhook; a hub cannot write
	// another unit's (here: site-2's hub claims site-1's nodes alive).
	forgeReport(t, l, kubeconfig, lab.NodeName("site-2", 0), site1)

	// One node's uplink is cut; its peers still hear it. Another node dies.
	l.must("lab", "partition", cutOff)
	l.must("lab", "stop-node", dead)
	if out := l.must("lab", "status"); !lineHas(out, dead, "off") {
		t.Errorf("lab status does not show %s powered off:\n%s", dead, out)
	}
	testenv.Eventually(t, 60*time.Second, func(ctx context.Context) error {
		return verdictsAre(ctx, c, site1, map[string]health.Verdict{cutOff: health.Alive, dead: health.Dead})
	})
	// The dead node is evicted as usual: NoExecute taint, its pod deleted
	// after the toleration and replaced.
	testenv.Eventually(t, 90*time.Second, func(ctx context.Context) error {
		n, err := admin.CoreV1().Nodes().Get(ctx, dead, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !hasTaint(n, corev1.TaintNodeUnreachable, corev1.TaintEffectNoExecute) {
			// The lifecycle controller stops tainting in a zone it finds
			// mostly NotReady: say which nodes it sees so.
			var notReady []string
			if all, err := admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
				for _, o := range all.Items {
					if !controlplane.NodeReady(&o) {
						notReady = append(notReady, o.Name)
					}
				}
			}
			return fmt.Errorf("dead node %s has no NoExecute taint: %v (NotReady nodes: %v)", dead, n.Spec.Taints, notReady)
		}
		p, err := admin.CoreV1().Pods(healthNS).Get(ctx, start[dead].Name, metav1.GetOptions{})
		if err != nil || p.DeletionTimestamp == nil {
			return fmt.Errorf("the pod on dead node %s is not being deleted (%v)", dead, err)
		}
		return nil
	})
	// The cut-off node, NotReady in the cloud for longer than the pods
	// tolerate, keeps its pod, Ready, in the Service's slice.
	testenv.Eventually(t, 60*time.Second, func(ctx context.Context) error {
		n, err := admin.CoreV1().Nodes().Get(ctx, cutOff, metav1.GetOptions{})
		if err != nil || controlplane.NodeReady(n) {
			return fmt.Errorf("%s still Ready in the cloud (%v)", cutOff, err)
		}
		return nil
	})
	time.Sleep(3 * tolerationSeconds * time.Second) // a condition that must keep holding
	keptOn := func(ctx context.Context, nodes ...string) error {
		now, err := podsByNode(ctx, admin)
		if err != nil {
			return err
		}
		kept := map[string]corev1.Pod{}
		for _, n := range nodes {
			p, ok := now[n]
			if !ok || p.UID != start[n].UID || p.DeletionTimestamp != nil || !podReady(&p) {
				return fmt.Errorf("the pod on %s was not kept (now %s, deleting %v, was %s)", n, p.UID, p.DeletionTimestamp != nil, start[n].UID)
			}
			kept[n] = p
			node, err := admin.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if hasTaint(node, corev1.TaintNodeUnreachable, corev1.TaintEffectNoExecute) {
				return fmt.Errorf("node %s got the NoExecute taint", n)
			}
		}
		return readyInSlices(ctx, admin, kept)
	}
	if err := keptOn(context.Background(), cutOff); err != nil {
		t.Error(err)
	}
	out := l.must("site", "health", site1, "--kubeconfig", kubeconfig)
	if !lineHas(out, cutOff, "NotReady", "alive", "keeps") || !lineHas(out, dead, "NotReady", "dead", "normal") {
		t.Errorf("sitegridctl site health %s:\n%s", site1, out)
	}

	// A whole unit cut off: no verdict can arrive, its report goes stale,
	// and its nodes keep their pods.
	l.must("lab", "partition", "site-2")
	site2Nodes := []string{lab.NodeName("site-2", 0), lab.NodeName("site-2", 1), lab.NodeName("site-2", 2)}
	testenv.Eventually(t, 60*time.Second, func(ctx context.Context) error {
		for _, n := range site2Nodes {
			node, err := admin.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil || controlplane.NodeReady(node) {
				return fmt.Errorf("%s still Ready in the cloud (%v)", n, err)
			}
		}
		return nil
	})
	time.Sleep(3 * tolerationSeconds * time.Second)
	if err := keptOn(context.Background(), append([]string{cutOff}, site2Nodes...)...); err != nil {
		t.Error(err)
	}
	if out := l.must("site", "health", site2, "--kubeconfig", kubeconfig); !strings.Contains(out, "stale") {
		t.Errorf("sitegridctl site health %s does not say the report is stale:\n%s", site2, out)
	}

	// Healed: every node Ready again, and the pods kept are the same pods,
	// never restarted.
	l.must("lab", "heal")
	l.must("lab", "start-node", dead)
	testenv.Eventually(t, 60*time.Second, func(ctx context.Context) error {
		nodes, err := admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for i := range nodes.Items {
			if !controlplane.NodeReady(&nodes.Items[i]) {
				return fmt.Errorf("%s is not Ready after healing", nodes.Items[i].Name)
			}
		}
		return keptOn(ctx, append([]string{cutOff}, site2Nodes...)...)
	})
	now, err := podsByNode(context.Background(), admin)
	if err != nil {
		t.Fatal(err)
	}
	for n, p := range now {
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount != 0 {
				t.Errorf("pod %s on %s restarted %d times", p.Name, n, cs.RestartCount)
			}
		}
	}

	// The gossip key is rotated (a new key added, made first, the old one
	// dropped) while the hubs run; a hub that starts afterwards knows only
	// the new key, so it joins its unit only if the running hubs installed
	// each step.
	secret, err := admin.CoreV1().Secrets(health.Namespace).Get(context.Background(), health.GossipKeySecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old := strings.TrimSpace(string(secret.Data["keys"]))
	next := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	for _, keys := range []string{old + "\n" + next, next + "\n" + old, next} {
		testenv.Modify(t, func(ctx context.Context) error {
			s, err := admin.CoreV1().Secrets(health.Namespace).Get(ctx, health.GossipKeySecret, metav1.GetOptions{})
			if err != nil {
				return err
			}
			s.Data["keys"] = []byte(keys + "\n")
			_, err = admin.CoreV1().Secrets(health.Namespace).Update(ctx, s, metav1.UpdateOptions{})
			return err
		})
		time.Sleep(3 * time.Second) // the hubs watch the Secret
	}
	l.must("lab", "stop-node", dead)
	l.must("lab", "start-node", dead)
	testenv.Eventually(t, 60*time.Second, func(ctx context.Context) error {
		return verdictsAre(ctx, c, site1, map[string]health.Verdict{})
	})
}

// seedHealth runs one pod per node (a DeploymentGrid of three per unit,
// spread over the unit's nodes) tolerating unreachable nodes only briefly,
// behind a Service.
func seedHealth(t *testing.T, c client.Client) {
	t.Helper()
	labels := map[string]string{"app": "till"}
	tolerate := func(key string) corev1.Toleration {
		return corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](tolerationSeconds)}
	}
	createAll(t, c,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: healthNS}},
		&gridv1.DeploymentGrid{ObjectMeta: metav1.ObjectMeta{Name: "till", Namespace: healthNS}, Spec: gridv1.DeploymentGridSpec{
			GridUniqKey: lab.GroupName,
			Template: &appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](3),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{
						Containers:  []corev1.Container{{Name: "till", Image: "till:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
						Tolerations: []corev1.Toleration{tolerate(corev1.TaintNodeUnreachable), tolerate(corev1.TaintNodeNotReady)},
						Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels}, TopologyKey: corev1.LabelHostname,
						}}}},
					},
				},
			},
		}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "till", Namespace: healthNS}, Spec: corev1.ServiceSpec{
			Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		}},
	)
}

// podsByNode is the running pod (not being deleted) of each node.
func podsByNode(ctx context.Context, cs kubernetes.Interface) (map[string]corev1.Pod, error) {
	pods, err := cs.CoreV1().Pods(healthNS).List(ctx, metav1.ListOptions{LabelSelector: "app=till"})
	if err != nil {
		return nil, err
	}
	out := map[string]corev1.Pod{}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			out[p.Spec.NodeName] = p
		}
	}
	return out, nil
}

// readyInSlices checks every pod is a ready endpoint of the Service, in
// its EndpointSlices and in its (legacy) Endpoints.
func readyInSlices(ctx context.Context, cs kubernetes.Interface, pods map[string]corev1.Pod) error {
	list, err := cs.DiscoveryV1().EndpointSlices(healthNS).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=till"})
	if err != nil {
		return err
	}
	ready := map[string]bool{}
	for _, s := range list.Items {
		for _, ep := range s.Endpoints {
			if ep.TargetRef != nil && ptr.Deref(ep.Conditions.Ready, true) {
				ready[ep.TargetRef.Name] = true
			}
		}
	}
	eps, err := cs.CoreV1().Endpoints(healthNS).Get(ctx, "till", metav1.GetOptions{})
	if err != nil {
		return err
	}
	readyEndpoints := map[string]bool{}
	for _, sub := range eps.Subsets {
		for _, a := range sub.Addresses {
			if a.TargetRef != nil {
				readyEndpoints[a.TargetRef.Name] = true
			}
		}
	}
	for n, p := range pods {
		if !ready[p.Name] {
			return fmt.Errorf("pod %s on %s is not a ready endpoint in the EndpointSlices", p.Name, n)
		}
		if !readyEndpoints[p.Name] {
			return fmt.Errorf("pod %s on %s is not a ready address in the Endpoints", p.Name, n)
		}
	}
	return nil
}

// verdictsAre checks a unit's published report: the named verdicts, and
// every other member alive.
func verdictsAre(ctx context.Context, c client.Client, unit string, want map[string]health.Verdict) error {
	lease := &coordinationv1.Lease{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: health.Namespace, Name: unit}, lease); err != nil {
		return fmt.Errorf("unit %s has no report yet: %w", unit, err)
	}
	r, err := health.ParseReport(lease.Annotations)
	if err != nil {
		return err
	}
	if len(r.Members) != 3 {
		return fmt.Errorf("unit %s reports members %v", unit, r.Members)
	}
	for _, m := range r.Members {
		w, ok := want[m]
		if !ok {
			w = health.Alive
		}
		if r.Verdicts[m] != w {
			return fmt.Errorf("unit %s says %s is %s, want %s (report by %s: %v)", unit, m, r.Verdicts[m], w, r.Reporter, r.Verdicts)
		}
	}
	return nil
}

func hasTaint(n *corev1.Node, key string, effect corev1.TaintEffect) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key && t.Effect == effect })
}

// forgeReport has node's hub credential rewrite unit's report as its own,
// and fails the test unless the apiserver refuses it.
func forgeReport(t *testing.T, l labRunner, kubeconfig, node, unit string) {
	t.Helper()
	certs, err := filepath.Glob(filepath.Join(l.workdir, "*", "nodes", node, "hub-client.crt"))
	if err != nil || len(certs) != 1 {
		t.Fatalf("hub credential of %s: %v %v", node, certs, err)
	}
	admin, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	hubCfg := rest.AnonymousClientConfig(admin)
	hubCfg.CertFile, hubCfg.KeyFile = certs[0], strings.TrimSuffix(certs[0], ".crt")+".key"
	hub, err := kubernetes.NewForConfig(hubCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	lease, err := hub.CoordinationV1().Leases(health.Namespace).Get(ctx, unit, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("hub %s reads unit %s's Lease: %v", node, unit, err)
	}
	report, err := health.ParseReport(lease.Annotations)
	if err != nil {
		t.Fatal(err)
	}
	report.Reporter = node
	for m := range report.Verdicts {
		report.Verdicts[m] = health.Alive
	}
	if lease.Annotations[health.ReportAnnotation], err = report.Annotation(); err != nil {
		t.Fatal(err)
	}
	lease.Spec.HolderIdentity = &node
	_, err = hub.CoordinationV1().Leases(health.Namespace).Update(ctx, lease, metav1.UpdateOptions{})
	if err == nil || !strings.Contains(err.Error(), "denied") || !strings.Contains(err.Error(), "is in no unit "+unit) {
		t.Errorf("hub %s rewrote unit %s's report: %v", node, unit, err)
	}
}
