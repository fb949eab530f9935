package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/process"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

const shop = "shop"

// TestLabEdgeHub drives the hub through the lab as a user would: the real
// kubectl and client-go informers read through a node's hub; after `lab
// partition` they get the same data, informers keep their stores without
// relisting, a hub killed while partitioned comes back and still serves it,
// and the cloud sees the node go NotReady; after `lab heal`, what changed in
// the cloud meanwhile reaches them.
func TestLabEdgeHub(t *testing.T) {
	l := upLab(t, "--sites", "2", "--nodes-per-site", "2", "--node-monitor-grace-period", "8s")
	ctx := context.Background()
	const node = "site-1-node-1"

	admin := labClient(t, strings.TrimSpace(l.must("lab", "kubeconfig")), nil)
	viaHub := strings.TrimSpace(l.must("lab", "kubeconfig", "--via-hub", node))
	if out, err := l.run("lab", "kubeconfig", "--via-hub", "nowhere"); err == nil || !strings.Contains(out, "not a lab node") {
		t.Errorf("--via-hub of an unknown node: err=%v, output %q", err, out)
	}
	seedShop(t, admin)

	// Each kubectl run starts with an empty discovery cache: offline, it
	// finds the API's resources through the hub's cache too.
	kubectl := func(args ...string) (string, error) {
		out, err := exec.Command(testenv.Binaries(t).Path(kubebin.Kubectl), append([]string{"--kubeconfig", viaHub, "--cache-dir", t.TempDir(), "-n", shop}, args...)...).CombinedOutput()
		return string(out), err
	}
	shopObjects := []string{"get", "pods,services,endpointslices,configmaps", "-o", "custom-columns=KIND:.kind,NAME:.metadata.name,RV:.metadata.resourceVersion", "--sort-by=.metadata.name"}
	var online string
	testenv.Eventually(t, 60*time.Second, func(context.Context) error {
		out, err := kubectl(shopObjects...)
		if err != nil {
			return fmt.Errorf("kubectl through the hub: %v\n%s", err, out)
		}
		if strings.Count(out, "\nPod ") != 2 || !strings.Contains(out, "\nEndpointSlice ") || !lineHas(out, "ConfigMap", "settings") {
			return fmt.Errorf("through the hub, the shop lacks objects:\n%s", out)
		}
		online = out
		return nil
	})

	// Informers through the hub; every list they make is counted.
	var lists atomic.Int64
	stores := startInformers(t, labClient(t, viaHub, &lists))
	testenv.Eventually(t, 30*time.Second, func(context.Context) error { return storesMatch(ctx, admin, stores) })
	// Settled: what kubectl reads now is what the hub holds at the cut.
	time.Sleep(2 * time.Second)
	testenv.Eventually(t, 30*time.Second, func(context.Context) error { return storesMatch(ctx, admin, stores) })
	online, err := kubectl(shopObjects...)
	if err != nil {
		t.Fatalf("kubectl through the hub: %v\n%s", err, online)
	}
	t.Logf("through the hub, kubectl reads:\n%s", online)

	if out := l.must("lab", "partition", "site-1"); !strings.Contains(out, "site-1-node-1, site-1-node-2") {
		t.Errorf("lab partition site-1 says %q", out)
	}
	if out := l.must("lab", "partition", node); !strings.Contains(out, "cut already") {
		t.Errorf("partitioning a cut node again says %q", out)
	}
	testenv.Eventually(t, 20*time.Second, func(context.Context) error {
		if out := l.must("lab", "status"); !lineHas(out, node, "cut", "offline") {
			return fmt.Errorf("lab status does not show %s cut and its hub offline:\n%s", node, out)
		}
		return nil
	})
	listsAtCut := lists.Load()
	for _, s := range stores {
		s.atStart = s.names()
	}
	if out, err := kubectl(shopObjects...); err != nil || out != online {
		t.Errorf("partitioned, kubectl through the hub reads (err %v):\n%s\nwant what it read online:\n%s", err, out, online)
	}
	if out, err := kubectl("create", "configmap", "offline-write"); err == nil || !strings.Contains(out, "unreachable") {
		t.Errorf("a write while partitioned: err %v, output %q; want a clear refusal", err, out)
	}

	// The cloud loses the node: its lease stops, it goes NotReady. The
	// other site is not touched.
	testenv.Eventually(t, 40*time.Second, func(ctx context.Context) error {
		n, err := admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil || controlplane.NodeReady(n) {
			return fmt.Errorf("node %s still Ready in the cloud (%v)", node, err)
		}
		return nil
	})
	if n, err := admin.CoreV1().Nodes().Get(ctx, "site-2-node-1", metav1.GetOptions{}); err != nil || !controlplane.NodeReady(n) {
		t.Errorf("site-2-node-1 is not Ready while only site-1 is partitioned (%v)", err)
	}

	// The cloud changes while the site is cut off.
	changeShop(t, admin)

	// A hub killed while partitioned comes back and serves from its cache.
	before := edgeNode(t, l.workdir, node)
	if err := syscall.Kill(before.HubPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func(context.Context) error {
		now := edgeNode(t, l.workdir, node)
		if now.HubPID == before.HubPID || !process.Alive(now.HubPID) || now.Hub != "offline" {
			return fmt.Errorf("hub not restarted yet (pid %d, was %d, sees the cloud %s)", now.HubPID, before.HubPID, now.Hub)
		}
		return nil
	})
	if out, err := kubectl(shopObjects...); err != nil || out != online {
		t.Errorf("after a hub restart while partitioned, kubectl reads (err %v):\n%s\nwant:\n%s", err, out, online)
	}
	time.Sleep(3 * time.Second) // informers reconnect to the restarted hub
	for name, s := range stores {
		if got := s.names(); !slices.Equal(got, s.atStart) {
			t.Errorf("partitioned, the %s informer's store changed: %v, had %v", name, got, s.atStart)
		}
	}
	if relists := lists.Load() - listsAtCut; relists > int64(len(stores)) {
		t.Errorf("informers listed %d times while partitioned: a relist loop", relists)
	}
	t.Logf("informers listed %d times while partitioned (%d informers)", lists.Load()-listsAtCut, len(stores))

	// Healed: the cloud's changes reach kubectl and the informers, and the
	// node is Ready again.
	if out := l.must("lab", "heal", "site-1"); !strings.Contains(out, "healed the uplink of site-1-node-1, site-1-node-2") {
		t.Errorf("lab heal site-1 says %q", out)
	}
	if out := l.must("lab", "heal"); !strings.Contains(out, "no uplink was cut") {
		t.Errorf("healing with nothing cut says %q", out)
	}
	testenv.Eventually(t, 60*time.Second, func(ctx context.Context) error {
		if err := storesMatch(ctx, admin, stores); err != nil {
			return err
		}
		out, err := kubectl("get", "configmap", "settings", "-o", "jsonpath={.data.mode}")
		if err != nil || out != "after" {
			return fmt.Errorf("kubectl through the hub reads mode %q (%v), want after", out, err)
		}
		return nil
	})
	_ = controlplane.WaitNodesReady(ctx, admin, 60*time.Second, node) // checked below
	if n, err := admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil || !controlplane.NodeReady(n) {
		t.Errorf("node %s not Ready after heal (%v)", node, err)
	}
	if out := l.must("lab", "status"); !lineHas(out, node, "up", "online") {
		t.Errorf("lab status does not show %s healed:\n%s", node, out)
	}
}

func labClient(t *testing.T, kubeconfig string, lists *atomic.Int64) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if lists != nil {
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
				q := r.URL.Query()
				if r.Method == http.MethodGet && (q.Get("watch") != "true" || q.Get("sendInitialEvents") == "true") {
					lists.Add(1)
				}
				return rt.RoundTrip(r)
			})
		})
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// seedShop creates the objects the test reads: two pods of a Deployment in
// site-1, their Service (hence an EndpointSlice) and a ConfigMap.
func seedShop(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: shop}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "till"}
	replicas := int32(2)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "till", Namespace: shop},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{lab.SiteLabel: "site-1"},
					Containers:   []corev1.Container{{Name: "till", Image: "till:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(shop).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "till", Namespace: shop},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := cs.CoreV1().Services(shop).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: shop}, Data: map[string]string{"mode": "before"}}
	if _, err := cs.CoreV1().ConfigMaps(shop).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// changeShop changes the cloud's objects: a ConfigMap updated, one added,
// the Deployment scaled to three.
func changeShop(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	cm, err := cs.CoreV1().ConfigMaps(shop).Get(ctx, "settings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["mode"] = "after"
	if _, err := cs.CoreV1().ConfigMaps(shop).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	added := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "added-offline", Namespace: shop}}
	if _, err := cs.CoreV1().ConfigMaps(shop).Create(ctx, added, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Modify(t, func(ctx context.Context) error {
		scale, err := cs.AppsV1().Deployments(shop).GetScale(ctx, "till", metav1.GetOptions{})
		if err != nil {
			return err
		}
		scale.Spec.Replicas = 3
		_, err = cs.AppsV1().Deployments(shop).UpdateScale(ctx, "till", scale, metav1.UpdateOptions{})
		return err
	})
}

// informerStore is one informer's store, with what it held when synced.
type informerStore struct {
	store   toolscache.Store
	list    func(context.Context, kubernetes.Interface) ([]metav1.Object, error)
	atStart []string
}

// names lists "name@resourceVersion" of the store, sorted.
func (s *informerStore) names() []string {
	var out []string
	for _, o := range s.store.List() {
		m := o.(metav1.Object)
		out = append(out, m.GetName()+"@"+m.GetResourceVersion())
	}
	slices.Sort(out)
	return out
}

func startInformers(t *testing.T, cs kubernetes.Interface) map[string]*informerStore {
	t.Helper()
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(shop))
	stores := map[string]*informerStore{
		"pods": {store: factory.Core().V1().Pods().Informer().GetStore(), list: func(ctx context.Context, cs kubernetes.Interface) ([]metav1.Object, error) {
			l, err := cs.CoreV1().Pods(shop).List(ctx, metav1.ListOptions{})
			return metaOf(l, err)
		}},
		"services": {store: factory.Core().V1().Services().Informer().GetStore(), list: func(ctx context.Context, cs kubernetes.Interface) ([]metav1.Object, error) {
			l, err := cs.CoreV1().Services(shop).List(ctx, metav1.ListOptions{})
			return metaOf(l, err)
		}},
		"endpointslices": {store: factory.Discovery().V1().EndpointSlices().Informer().GetStore(), list: func(ctx context.Context, cs kubernetes.Interface) ([]metav1.Object, error) {
			l, err := cs.DiscoveryV1().EndpointSlices(shop).List(ctx, metav1.ListOptions{})
			return metaOf(l, err)
		}},
		"configmaps": {store: factory.Core().V1().ConfigMaps().Informer().GetStore(), list: func(ctx context.Context, cs kubernetes.Interface) ([]metav1.Object, error) {
			l, err := cs.CoreV1().ConfigMaps(shop).List(ctx, metav1.ListOptions{})
			return metaOf(l, err)
		}},
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	factory.Start(stop)
	for name, synced := range factory.WaitForCacheSync(stop) {
		if !synced {
			t.Fatalf("informer %v did not sync through the hub", name)
		}
	}
	return stores
}

// metaOf returns the items of any typed list.
func metaOf(list runtime.Object, err error) ([]metav1.Object, error) {
	if err != nil {
		return nil, err
	}
	var out []metav1.Object
	objs, err := meta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		m, err := meta.Accessor(o)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// storesMatch compares every informer's store with the cloud, and records
// the stores' contents once they match.
func storesMatch(ctx context.Context, admin kubernetes.Interface, stores map[string]*informerStore) error {
	for name, s := range stores {
		objs, err := s.list(ctx, admin)
		if err != nil {
			return err
		}
		var want []string
		for _, o := range objs {
			want = append(want, o.GetName()+"@"+o.GetResourceVersion())
		}
		slices.Sort(want)
		if got := s.names(); !slices.Equal(got, want) {
			return fmt.Errorf("the %s informer holds %v, the cloud %v", name, got, want)
		}
		s.atStart = want
	}
	return nil
}

func edgeNode(t *testing.T, workdir, name string) lab.NodeStatus {
	t.Helper()
	nodes, err := lab.EdgeNodes(context.Background(), workdir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("lab has no node %s", name)
	return lab.NodeStatus{}
}

// lineHas reports whether a line of out mentions every word.
func lineHas(out string, words ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		ok := true
		for _, w := range words {
			ok = ok && slices.Contains(f, w)
		}
		if ok {
			return true
		}
	}
	return false
}
