package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/hub/config"
	"github.com/sitegrid/sitegrid/internal/hub/server"
	"github.com/sitegrid/sitegrid/internal/hub/topology"
	"github.com/sitegrid/sitegrid/internal/link"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestServiceTopology runs a hub for node a-1 of unit a in front of a real
// control plane: kube-proxy (by its User-Agent, with its ServiceAccount
// token) sees only unit a's endpoints of a Service with topology keys, in
// lists (JSON and protobuf clients), watches and Endpoints, online and with
// the uplink cut; kubectl with the same token, and any Service without the
// annotation, see every endpoint.
func TestServiceTopology(t *testing.T) {
	cp := testenv.StartControlPlane(t, testenv.ControlPlaneOptions{})
	admin, err := cp.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const self = "a-1"
	for i, n := range []struct{ name, unit string }{{"a-1", "a"}, {"a-2", "a"}, {"b-1", "b"}, {"b-2", "b"}} {
		if err := controlplane.CreateNode(ctx, admin, controlplane.Node{Name: n.name, Labels: map[string]string{"lab": n.unit}, InternalIP: fmt.Sprintf("198.18.1.%d", 10+i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, svc := range []struct {
		name        string
		annotations map[string]string
	}{{"web", map[string]string{topology.AnnotationSuperEdge: `["lab"]`}}, {"plain", nil}} {
		if _, err := admin.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: svc.name, Annotations: svc.annotations},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.DiscoveryV1().EndpointSlices("default").Create(ctx, slice(svc.name, "a-1", "a-2", "b-1"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.CoreV1().Endpoints("default").Create(ctx, endpoints(svc.name, "a-1", "b-1"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	token := kubeProxyToken(t, admin)

	// The hub, in this process, behind a link the test can cut.
	uplink, err := link.Listen("127.0.0.1:0", strings.TrimPrefix(cp.Endpoint, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = uplink.Close() })
	hubURL := runHub(t, cp, admin, self, "https://"+uplink.Addr())

	caPEM, err := os.ReadFile(cp.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	var lists atomic.Int64 // lists and watch-lists of kube-proxy's informer client
	client := func(userAgent, contentType string) kubernetes.Interface {
		cfg := &rest.Config{Host: hubURL, BearerToken: token, UserAgent: userAgent, TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}}
		cfg.ContentType, cfg.AcceptContentTypes = contentType, contentType
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
				if q := r.URL.Query(); q.Get("watch") != "true" || q.Get("sendInitialEvents") == "true" {
					lists.Add(1)
				}
				return rt.RoundTrip(r)
			})
		})
		return kubernetes.NewForConfigOrDie(cfg)
	}
	kubeProxy := client("kube-proxy/v1.37.1 (linux/amd64) kubernetes/test", "")
	kubeProxyJSON := client("kube-proxy/v1.37.1 (linux/amd64) kubernetes/test", "application/json")
	kubectl := client("kubectl/v1.37.1 (linux/amd64) kubernetes/test", "")

	want := map[string][]string{"web": {"a-1", "a-2"}, "plain": {"a-1", "a-2", "b-1"}}
	// kube-proxy's very first list, as soon as the hub answers at all, is
	// filtered already: the hub holds it until its rules are known.
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		_, err := kubectl.Discovery().ServerVersion()
		return err
	})
	if err := sliceNodes(ctx, kubeProxy, want); err != nil {
		t.Errorf("kube-proxy's first list through a new hub: %v", err)
	}
	all := map[string][]string{"web": {"a-1", "a-2", "b-1"}, "plain": {"a-1", "a-2", "b-1"}}
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		for name, cs := range map[string]kubernetes.Interface{"protobuf": kubeProxy, "json": kubeProxyJSON} {
			if err := sliceNodes(ctx, cs, want); err != nil {
				return fmt.Errorf("kube-proxy (%s): %w", name, err)
			}
		}
		return endpointNodes(ctx, kubeProxy, map[string][]string{"web": {"a-1"}, "plain": {"a-1", "b-1"}})
	})
	if err := sliceNodes(ctx, kubectl, all); err != nil {
		t.Errorf("kubectl through the hub: %v", err)
	}

	// A kube-proxy informer: its store holds the filtered slices, and an
	// endpoint added in unit b never reaches it while one in unit a does.
	factory := informers.NewSharedInformerFactory(kubeProxy, 0)
	sliceInformer := factory.Discovery().V1().EndpointSlices()
	sliceInformer.Informer() // registered before Start
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	factory.Start(stop)
	factory.WaitForCacheSync(stop)
	storeNodes := func() map[string][]string {
		got := map[string][]string{}
		for _, o := range sliceInformer.Informer().GetStore().List() {
			s := o.(*discoveryv1.EndpointSlice)
			got[s.Labels[discoveryv1.LabelServiceName]] = nodeNames(s)
		}
		return got
	}
	if diff := compare(want, storeNodes()); diff != "" {
		t.Errorf("informer store: %s", diff)
	}
	web, err := admin.DiscoveryV1().EndpointSlices("default").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	web.Endpoints = append(web.Endpoints, endpoint("b-2", 20), endpoint("a-2", 21))
	if _, err := admin.DiscoveryV1().EndpointSlices("default").Update(ctx, web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func(context.Context) error {
		return compare(map[string][]string{"web": {"a-1", "a-2", "a-2"}, "plain": want["plain"]}, storeNodes()).err()
	})

	// The rules change under an open watch: the informer's view is
	// corrected without it restarting (it makes no new list).
	webNow := map[string][]string{"web": {"a-1", "a-2", "a-2"}, "plain": want["plain"]}
	setLabel := func(node, unit string) {
		t.Helper()
		testenv.Modify(t, func(ctx context.Context) error {
			n, err := admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			n.Labels["lab"] = unit
			_, err = admin.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
			return err
		})
	}
	setKeys := func(annotations map[string]string) {
		t.Helper()
		svc, err := admin.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Annotations = annotations
		if _, err := admin.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	listsBefore := lists.Load()
	for _, step := range []struct {
		what   string
		change func()
		want   []string
	}{
		{"a-2 moves to unit b", func() { setLabel("a-2", "b") }, []string{"a-1"}},
		{"b-2 moves to unit a", func() { setLabel("b-2", "a") }, []string{"a-1", "b-2"}},
		{"web loses its topology keys", func() { setKeys(nil) }, []string{"a-1", "a-2", "b-1", "b-2", "a-2"}},
		{"web gets them back", func() { setKeys(map[string]string{topology.AnnotationOpenYurt: "lab"}) }, []string{"a-1", "b-2"}},
		{"the nodes move back", func() { setLabel("a-2", "a"); setLabel("b-2", "b") }, webNow["web"]},
	} {
		step.change()
		testenv.Eventually(t, 20*time.Second, func(context.Context) error {
			if err := compare(map[string][]string{"web": step.want, "plain": want["plain"]}, storeNodes()).err(); err != nil {
				return fmt.Errorf("after %s: %w", step.what, err)
			}
			return nil
		})
	}

	if n := lists.Load() - listsBefore; n != 0 {
		t.Errorf("kube-proxy's informer listed %d times while the rules changed: its watch should have been corrected in place", n)
	}

	// Cut off: the same answers, from the cache.
	uplink.Cut()
	testenv.Eventually(t, 20*time.Second, func(ctx context.Context) error {
		return sliceNodes(ctx, kubeProxy, map[string][]string{"web": {"a-1", "a-2", "a-2"}, "plain": want["plain"]})
	})
	if err := sliceNodes(ctx, kubectl, map[string][]string{"web": {"a-1", "a-2", "b-1", "b-2", "a-2"}, "plain": want["plain"]}); err != nil {
		t.Errorf("kubectl through the hub, offline: %v", err)
	}
}

func endpoint(node string, host int) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("198.19.0.%d", host)}, NodeName: ptr.To(node),
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}
}

func slice(svc string, nodes ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To[int32](80)}},
	}
	for i, n := range nodes {
		s.Endpoints = append(s.Endpoints, endpoint(n, 10+i))
	}
	return s
}

// endpoints builds a core/v1 Endpoints object: deprecated, but the filter
// still serves its readers.
//
//lint:ignore SA1019 the hub filters Endpoints as long as clients read them
func endpoints(svc string, nodes ...string) *corev1.Endpoints {
	// Not mirrored into EndpointSlices: the test reads each kind on its own.
	//lint:ignore SA1019 the hub filters Endpoints as long as clients read them
	e := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc, Labels: map[string]string{discoveryv1.LabelSkipMirror: "true"}}, Subsets: []corev1.EndpointSubset{{Ports: []corev1.EndpointPort{{Port: 80}}}}}
	for i, n := range nodes {
		e.Subsets[0].Addresses = append(e.Subsets[0].Addresses, corev1.EndpointAddress{IP: fmt.Sprintf("198.19.1.%d", 10+i), NodeName: ptr.To(n)})
	}
	return e
}

func nodeNames(s *discoveryv1.EndpointSlice) []string {
	var out []string
	for _, e := range s.Endpoints {
		out = append(out, ptr.Deref(e.NodeName, ""))
	}
	return out
}

type diffText string

func (d diffText) err() error {
	if d == "" {
		return nil
	}
	return fmt.Errorf("%s", string(d))
}

func compare(want, got map[string][]string) diffText {
	for svc, nodes := range want {
		if !slices.Equal(nodes, got[svc]) {
			return diffText(fmt.Sprintf("Service %s: endpoints on %v, want %v", svc, got[svc], nodes))
		}
	}
	return ""
}

// sliceNodes lists EndpointSlices of all namespaces, as kube-proxy does
// (offline, the hub answers the list the informer's watch kept current).
func sliceNodes(ctx context.Context, cs kubernetes.Interface, want map[string][]string) error {
	list, err := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	got := map[string][]string{}
	for i := range list.Items {
		got[list.Items[i].Labels[discoveryv1.LabelServiceName]] = nodeNames(&list.Items[i])
	}
	return compare(want, got).err()
}

func endpointNodes(ctx context.Context, cs kubernetes.Interface, want map[string][]string) error {
	list, err := cs.CoreV1().Endpoints("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	got := map[string][]string{}
	for _, e := range list.Items {
		for _, s := range e.Subsets {
			for _, a := range s.Addresses {
				got[e.Name] = append(got[e.Name], ptr.Deref(a.NodeName, ""))
			}
		}
	}
	return compare(want, got).err()
}

// kubeProxyToken returns a token of kube-system/kube-proxy, bound to the
// node-proxier role as kubeadm binds it.
func kubeProxyToken(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().ServiceAccounts("kube-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node-proxier"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "kube-proxy", Namespace: "kube-system"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "kube-proxy", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// runHub runs server.Run for node in this process and returns its URL.
func runHub(t *testing.T, cp *controlplane.ControlPlane, admin kubernetes.Interface, node, upstreamURL string) string {
	t.Helper()
	dir := t.TempDir()
	servingCert, servingKey, credCert, credKey := hubCredentials(t, cp, admin, node, dir)
	api := freeAddr(t)
	cfg := config.HubConfiguration{
		NodeName: node, ListenAddress: api, HealthAddress: freeAddr(t),
		ServingCertFile: servingCert, ServingKeyFile: servingKey, ClientCAFile: cp.CAFile, ServerCAFile: cp.CAFile,
		Servers: []string{upstreamURL}, ClientCertFile: credCert, ClientKeyFile: credKey,
		CachePath: filepath.Join(dir, "cache.db"), ProbeInterval: metav1.Duration{Duration: 500 * time.Millisecond},
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(rctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hub: %v", err)
		}
	})
	return "https://" + api
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestFilteredWatchSlowReader: a filtered watch whose reader stalls while
// the cloud sends many events loses none of them; they arrive in order,
// filtered, once it reads again.
func TestFilteredWatchSlowReader(t *testing.T) {
	cp := testenv.StartControlPlane(t, testenv.ControlPlaneOptions{})
	admin, err := cp.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, n := range []struct{ name, unit string }{{"a-1", "a"}, {"b-1", "b"}} {
		if err := controlplane.CreateNode(ctx, admin, controlplane.Node{Name: n.name, Labels: map[string]string{"lab": n.unit}, InternalIP: fmt.Sprintf("198.18.1.%d", 10+i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Annotations: map[string]string{topology.AnnotationSuperEdge: `["lab"]`}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	created, err := admin.DiscoveryV1().EndpointSlices("default").Create(ctx, slice("web", "a-1", "b-1"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := kubeProxyToken(t, admin)
	hubURL := runHub(t, cp, admin, "a-1", cp.Endpoint)
	caPEM, err := os.ReadFile(cp.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: hubURL, BearerToken: token, UserAgent: "kube-proxy/v1.37.1", TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}}
	kubeProxy := kubernetes.NewForConfigOrDie(cfg)
	testenv.Eventually(t, 20*time.Second, func(ctx context.Context) error {
		return sliceNodes(ctx, kubeProxy, map[string][]string{"web": {"a-1"}})
	})

	w, err := kubeProxy.DiscoveryV1().EndpointSlices("default").Watch(ctx, metav1.ListOptions{ResourceVersion: created.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// The reader stalls while 300 updates are made, each adding an
	// endpoint in unit b (filtered out) and moving a label (kept).
	const updates = 300
	for i := 0; i < updates; i++ {
		s, err := admin.DiscoveryV1().EndpointSlices("default").Get(ctx, "web-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Labels["round"] = strconv.Itoa(i)
		s.Endpoints = append(s.Endpoints, endpoint("b-1", 100+i%100))
		if _, err := admin.DiscoveryV1().EndpointSlices("default").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	timeout := time.After(60 * time.Second)
	for i := 0; i < updates; {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch ended after %d of %d events", i, updates)
			}
			s, isSlice := ev.Object.(*discoveryv1.EndpointSlice)
			if !isSlice || s.Name != "web-1" {
				continue
			}
			if got := s.Labels["round"]; got != strconv.Itoa(i) {
				t.Fatalf("event %d is round %q: an event was lost or reordered", i, got)
			}
			if nodes := nodeNames(s); !slices.Equal(nodes, []string{"a-1"}) {
				t.Fatalf("event %d not filtered: %v", i, nodes)
			}
			i++
		case <-timeout:
			t.Fatalf("only %d of %d events arrived", i, updates)
		}
	}
}
