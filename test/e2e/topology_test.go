package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/lab/netns"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

const topoNS = "topo"

// noNetnsEnv, set, runs TestLabServiceTopology's informer variant even as
// root.
const noNetnsEnv = "SITEGRID_E2E_NO_NETNS"

// routes is what one node routes to: Service ("ns/name") -> sorted
// endpoint addresses ("ip:port").
type routes map[string][]string

// TestLabServiceTopology: a ServiceGrid spanning the lab's two units. Each
// node's kube-proxy (the real one, in the node's network namespace, talking
// to the node's hub) programs exactly its own unit's endpoints into the
// node's iptables, while an unannotated Service keeps every endpoint. Scaling
// one unit changes only that unit's rules; a partitioned node keeps its
// rules, also across a kube-proxy restart; after healing every node follows
// the cloud again. Without root (no network namespaces), client-go informers
// with kube-proxy's User-Agent read each node's endpoints through its hub
// instead, through the same steps.
func TestLabServiceTopology(t *testing.T) {
	testenv.Binaries(t)
	why := lab.KubeProxyAvailable()
	if why == nil && os.Getenv(noNetnsEnv) != "" {
		why = fmt.Errorf("%s is set", noNetnsEnv)
	}
	withKubeProxy := why == nil
	if !withKubeProxy {
		t.Logf("the real kube-proxy is skipped (%v); informers with kube-proxy's User-Agent read each node's endpoints through its hub instead. CI runs the kube-proxy variant as root.", why)
	}
	l := upLab(t, "--sites", "2", "--nodes-per-site", "2", "--node-monitor-grace-period", "8s", "--kube-proxy="+strconv.FormatBool(withKubeProxy))
	ctx := context.Background()
	_, admin, c := l.clients()
	nodes := []string{lab.NodeName("site-1", 0), lab.NodeName("site-1", 1), lab.NodeName("site-2", 0), lab.NodeName("site-2", 1)}
	unitOf := map[string]string{}
	for _, n := range nodes {
		unitOf[n] = lab.UnitName(edgeNode(t, l.workdir, n).Site)
	}

	// lab exec runs a command on a node's own network, with its exit status.
	if withKubeProxy {
		if out := l.must("lab", "exec", nodes[0], "--", "ip", "-o", "addr", "show", "dev", "lo"); !strings.Contains(out, edgeNode(t, l.workdir, nodes[0]).IP+"/32") {
			t.Errorf("lab exec %s -- ip addr shows no node address:\n%s", nodes[0], out)
		}
		var exit *exec.ExitError
		if _, err := l.run("lab", "exec", nodes[0], "--", "sh", "-c", "exit 3"); !errors.As(err, &exit) || exit.ExitCode() != 3 {
			t.Errorf("lab exec of a command exiting 3: %v, want exit status 3", err)
		}
	} else if out, err := l.run("lab", "exec", nodes[0], "--", "true"); err == nil || !strings.Contains(out, "no network namespace") {
		t.Errorf("lab exec without namespaces: %v\n%s, want a refusal naming --kube-proxy", err, out)
	}

	var observe func(ctx context.Context, node string) (routes, error)
	if withKubeProxy {
		observe = func(ctx context.Context, node string) (routes, error) {
			return iptablesRoutes(ctx, edgeNode(t, l.workdir, node).Netns)
		}
	} else {
		observe = informerRoutes(t, l, nodes)
	}

	// The ServiceGrid's Service is filtered per unit; web-all, a plain
	// Service over the same pods, is not.
	seedTopology(t, c, corev1.Container{Name: "web", Image: "web:1", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}})
	svc, all := topoNS+"/web-svc", topoNS+"/web-all"
	// want is what each node must route to, from the cloud's view; with
	// counts, only once each unit has that many ready pods.
	want := func(ctx context.Context, counts map[string]int) (map[string]routes, error) {
		perUnit, every, err := readyEndpoints(ctx, admin)
		if err != nil {
			return nil, err
		}
		for unit, n := range counts {
			if len(perUnit[unit]) != n {
				return nil, fmt.Errorf("unit %s has %d ready pods, want %d", unit, len(perUnit[unit]), n)
			}
		}
		out := map[string]routes{}
		for _, n := range nodes {
			out[n] = routes{svc: perUnit[unitOf[n]], all: every}
		}
		return out, nil
	}
	// converged waits until each unit runs counts ready pods and every node
	// routes as the cloud says, and returns that.
	converged := func(step string, counts map[string]int) map[string]routes {
		t.Helper()
		var got map[string]routes
		testenv.Eventually(t, 90*time.Second, func(ctx context.Context) error {
			w, err := want(ctx, counts)
			if err != nil {
				return err
			}
			got = map[string]routes{}
			for _, n := range nodes {
				r, err := observe(ctx, n)
				if err != nil {
					return fmt.Errorf("%s: %w", n, err)
				}
				got[n] = routes{svc: r[svc], all: r[all]}
				if !routesEqual(got[n], w[n]) {
					return fmt.Errorf("%s, node %s routes %v, want %v", step, n, got[n], w[n])
				}
			}
			return nil
		})
		return got
	}

	site1, site2 := lab.UnitName("site-1"), lab.UnitName("site-2")
	start := converged("at start", map[string]int{site1: 2, site2: 2})
	for _, n := range nodes {
		if len(start[n][svc]) != 2 || len(start[n][all]) != 4 {
			t.Fatalf("node %s routes %v; want its unit's 2 endpoints of %s and all 4 of %s", n, start[n], svc, all)
		}
	}
	// In-cluster clients on a node (kubectl in the node's namespace, at the
	// kubernetes Service's IP, as a pod would) read Services.
	inCluster := func() (string, error) {
		n := edgeNode(t, l.workdir, nodes[0])
		out, err := netns.Command(ctx, n.Netns, testenv.Binaries(t).Path(kubebin.Kubectl), "--kubeconfig", inClusterKubeconfig(t, n),
			"--cache-dir", t.TempDir(), "-n", topoNS, "get", "services", "-o", "name").CombinedOutput()
		if err == nil && !strings.Contains(string(out), "service/web-svc") {
			err = fmt.Errorf("no web-svc")
		}
		return string(out), err
	}
	if withKubeProxy {
		// The node's kube-proxy sends default/kubernetes to the node's hub
		// (serviceTopology.kubernetesEndpoint).
		n := edgeNode(t, l.workdir, nodes[0])
		r, err := iptablesRoutes(ctx, n.Netns)
		if err != nil {
			t.Fatal(err)
		}
		_, hubPort, _ := strings.Cut(n.HubAddress, ":")
		if got, want := r["default/kubernetes"], []string{n.IP + ":" + hubPort}; !slices.Equal(got, want) {
			t.Errorf("%s routes default/kubernetes to %v, want its hub %v", nodes[0], got, want)
		}
		if out, err := inCluster(); err != nil {
			t.Errorf("kubectl on %s through https://%s: %v\n%s", nodes[0], controlplane.KubernetesServiceIP, err, out)
		}
	}

	// Scaling site-2's copy changes only site-2's rules.
	scaleUnit(t, c, site2, 3)
	scaled := converged("site-2 scaled to 3", map[string]int{site1: 2, site2: 3})
	for _, n := range nodes {
		if unitOf[n] == site1 && !slices.Equal(scaled[n][svc], start[n][svc]) {
			t.Errorf("scaling site-2 changed %s's routes of %s: %v, was %v", n, svc, scaled[n][svc], start[n][svc])
		}
		if unitOf[n] == site2 && len(scaled[n][svc]) != 3 {
			t.Errorf("%s routes %v of %s after scaling its unit to 3", n, scaled[n][svc], svc)
		}
	}

	// site-1 is cut off. The cloud goes on (site-2 scales down); site-1's
	// nodes keep routing as they did, also after kube-proxy restarts.
	l.must("lab", "partition", "site-1")
	testenv.Eventually(t, 20*time.Second, func(context.Context) error {
		if out := l.must("lab", "status"); !lineHas(out, nodes[0], "cut", "offline") || !lineHas(out, nodes[1], "cut", "offline") {
			return fmt.Errorf("lab status does not show site-1's hubs offline:\n%s", out)
		}
		return nil
	})
	scaleUnit(t, c, site2, 1)
	restartKubeProxy(t, l, nodes[0], withKubeProxy)
	testenv.Eventually(t, 90*time.Second, func(ctx context.Context) error {
		w, err := want(ctx, nil)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			r, err := observe(ctx, n)
			if err != nil {
				return fmt.Errorf("%s: %w", n, err)
			}
			r = routes{svc: r[svc], all: r[all]}
			if unitOf[n] == site1 {
				// What the cloud said when the link broke.
				if !routesEqual(r, scaled[n]) {
					return fmt.Errorf("partitioned %s routes %v, want what it routed before the cut %v", n, r, scaled[n])
				}
			} else if len(r[svc]) != 1 || !slices.Equal(r[svc], w[n][svc]) {
				return fmt.Errorf("%s routes %v of %s, want %v", n, r[svc], svc, w[n][svc])
			}
		}
		return nil
	})
	if withKubeProxy {
		// The same in-cluster client, partitioned: the kubernetes Service's
		// IP leads to the node's hub, which answers from its cache.
		if out, err := inCluster(); err != nil {
			t.Errorf("partitioned, kubectl on %s through https://%s: %v\n%s", nodes[0], controlplane.KubernetesServiceIP, err, out)
		}
	}

	// Healed: every node follows the cloud again.
	l.must("lab", "heal")
	converged("after heal", map[string]int{site1: 2, site2: 1})
}

// seedTopology creates the ServiceGrid and DeploymentGrid across the lab's
// units, and web-all, a plain Service over the same pods.
func seedTopology(t *testing.T, c client.Client, web corev1.Container, volumes ...corev1.Volume) {
	t.Helper()
	labels := map[string]string{"app": "web"}
	ports := []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}
	createAll(t, c,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: topoNS}},
		&gridv1.DeploymentGrid{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: topoNS}, Spec: gridv1.DeploymentGridSpec{
			GridUniqKey: lab.GroupName,
			Template: &appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](2),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{web}, Volumes: volumes},
				},
			},
		}},
		&gridv1.ServiceGrid{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: topoNS}, Spec: gridv1.ServiceGridSpec{
			GridUniqKey: lab.GroupName, Template: corev1.ServiceSpec{Selector: labels, Ports: ports},
		}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web-all", Namespace: topoNS}, Spec: corev1.ServiceSpec{Selector: labels, Ports: ports}},
	)
}

// scaleUnit sets one unit's replicas through the DeploymentGrid's overrides.
func scaleUnit(t *testing.T, c client.Client, unit string, replicas int32) {
	t.Helper()
	testenv.Modify(t, func(ctx context.Context) error {
		g := &gridv1.DeploymentGrid{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: topoNS, Name: "web"}, g); err != nil {
			return err
		}
		g.Spec.Overrides = []gridv1.Override{{Name: "scale " + unit, Units: []string{unit}, Replicas: ptr.To(replicas)}}
		return c.Update(ctx, g)
	})
}

// readyEndpoints reads, from the cloud, the ready pods of web by unit and
// all of them, as "ip:8080".
func readyEndpoints(ctx context.Context, cs kubernetes.Interface) (map[string][]string, []string, error) {
	pods, err := cs.CoreV1().Pods(topoNS).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		return nil, nil, err
	}
	perUnit, every := map[string][]string{}, []string{}
	for _, p := range pods.Items {
		if p.Status.PodIP == "" || p.DeletionTimestamp != nil || !podReady(&p) {
			continue
		}
		ep := p.Status.PodIP + ":8080"
		unit := p.Labels[gridv1.LabelGridUnit]
		perUnit[unit] = append(perUnit[unit], ep)
		every = append(every, ep)
	}
	for u := range perUnit {
		slices.Sort(perUnit[u])
	}
	slices.Sort(every)
	return perUnit, every, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func routesEqual(a, b routes) bool {
	return maps.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}

// A KUBE-SEP rule: the Service in its comment, the endpoint it DNATs to.
var sepRule = regexp.MustCompile(`^-A KUBE-SEP-\S+ .*--comment "?([^" ]+)"? .*-j DNAT --to-destination (\S+)`)

// iptablesRoutes reads the endpoints kube-proxy programmed into the nat
// table of a node's network namespace.
func iptablesRoutes(ctx context.Context, ns string) (routes, error) {
	if ns == "" {
		return nil, fmt.Errorf("the node runs no kube-proxy")
	}
	out, err := netns.Command(ctx, ns, "iptables-save", "-t", "nat").Output()
	if err != nil {
		return nil, fmt.Errorf("iptables-save in %s: %w", ns, err)
	}
	r := routes{}
	for _, line := range strings.Split(string(out), "\n") {
		if m := sepRule.FindStringSubmatch(line); m != nil {
			svc, _, _ := strings.Cut(m[1], ":") // "ns/name:port-name"
			r[svc] = append(r[svc], m[2])
		}
	}
	for k := range r {
		slices.Sort(r[k])
	}
	return r, nil
}

// informerRoutes starts, per node, an EndpointSlice informer that reads
// through the node's hub with kube-proxy's User-Agent, and returns what each
// holds: ready endpoints per Service.
func informerRoutes(t *testing.T, l labRunner, nodes []string) func(context.Context, string) (routes, error) {
	var mu sync.Mutex
	stores := map[string]toolscache.Store{}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	for _, n := range nodes {
		cfg, err := clientcmd.BuildConfigFromFlags("", strings.TrimSpace(l.must("lab", "kubeconfig", "--via-hub", n)))
		if err != nil {
			t.Fatal(err)
		}
		cfg.UserAgent = "kube-proxy/v1.37.1 (linux/amd64) kubernetes/e2e"
		cs := kubernetes.NewForConfigOrDie(cfg)
		f := informers.NewSharedInformerFactory(cs, 0)
		inf := f.Discovery().V1().EndpointSlices().Informer()
		mu.Lock()
		stores[n] = inf.GetStore()
		mu.Unlock()
		f.Start(stop)
	}
	return func(_ context.Context, node string) (routes, error) {
		mu.Lock()
		store := stores[node]
		mu.Unlock()
		r := routes{}
		for _, o := range store.List() {
			s := o.(*discoveryv1.EndpointSlice)
			svc := s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				for _, p := range s.Ports {
					for _, a := range ep.Addresses {
						r[svc] = append(r[svc], a+":"+strconv.Itoa(int(ptr.Deref(p.Port, 0))))
					}
				}
			}
		}
		for k := range r {
			slices.Sort(r[k])
		}
		return r, nil
	}
}

// restartKubeProxy kills the node's kube-proxy and waits for the lab to
// start a new one. Without kube-proxy there is nothing to restart.
func restartKubeProxy(t *testing.T, l labRunner, node string, withKubeProxy bool) {
	t.Helper()
	if !withKubeProxy {
		return
	}
	before := edgeNode(t, l.workdir, node)
	if err := syscall.Kill(before.KubeProxyPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, func(context.Context) error {
		if now := edgeNode(t, l.workdir, node); now.KubeProxyPID == before.KubeProxyPID || now.KubeProxyPID == 0 {
			return fmt.Errorf("kube-proxy of %s not restarted yet", node)
		}
		return nil
	})
}

// inClusterKubeconfig is what a pod on the node would use: the kubernetes
// Service's IP, verified with the cluster CA, and a token (the lab user's).
func inClusterKubeconfig(t *testing.T, n lab.NodeStatus) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(n.ViaHubKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + controlplane.KubernetesServiceIP + ":443"
	}
	path := t.TempDir() + "/in-cluster.kubeconfig"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
