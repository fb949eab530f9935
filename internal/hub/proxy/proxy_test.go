package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/proxy"
	"github.com/sitegrid/sitegrid/internal/hub/upstream"
	"github.com/sitegrid/sitegrid/internal/link"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/rbac/hubrbac"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

const node = "edge-1"

type hubFixture struct {
	t       testing.TB
	cp      *controlplane.ControlPlane
	caPEM   []byte
	hubURL  string
	admin   kubernetes.Interface
	tracker *upstream.Tracker
	// serve starts another hub on the same credentials.
	serve func(*upstream.Tracker, *cache.Store) string
	// podLists counts LISTs of pods the hubs received, plain or watch-list.
	podLists *atomic.Int64
	// uplink is the hub's path to the apiserver.
	uplink *link.Link
	// transport reaches the apiserver with the hub's credential.
	transport http.RoundTripper
	// clock is the hubs' clock: real time, moved on by the test.
	clock *testClock
}

// testClock is real time plus an offset a test can add to.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// certClient is a client of the hub that authenticates with a certificate
// of the cluster CA for user in groups.
func (f *hubFixture) certClient(user string, groups []string, mutate func(*rest.Config)) kubernetes.Interface {
	f.t.Helper()
	kp, err := f.cp.IssueCert(pki.LeafRequest{CommonName: user, Organizations: groups, Client: true})
	if err != nil {
		f.t.Fatal(err)
	}
	key, err := pki.KeyPEM(kp.Key)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := &rest.Config{Host: f.hubURL, TLSClientConfig: rest.TLSClientConfig{CAData: f.caPEM, CertData: pki.CertPEM(kp.Cert), KeyData: key}}
	if mutate != nil {
		mutate(cfg)
	}
	return kubernetes.NewForConfigOrDie(cfg)
}

func (f *hubFixture) tokenClient(token string) kubernetes.Interface {
	return kubernetes.NewForConfigOrDie(&rest.Config{Host: f.hubURL, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: f.caPEM}})
}

// openStore opens a cache file of the test's own, closed when it ends.
func openStore(t testing.TB) *cache.Store {
	t.Helper()
	store, err := cache.Open(filepath.Join(t.TempDir(), "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// startHub runs a hub for node edge-1 in front of a real control plane, with
// a credential RBAC lets impersonate that node's kubelet and nothing else.
func startHub(t testing.TB, store *cache.Store) *hubFixture {
	cp := testenv.StartControlPlane(t, testenv.ControlPlaneOptions{})
	admin, err := cp.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := controlplane.CreateNode(ctx, admin, controlplane.Node{Name: node, InternalIP: "198.18.1.10"}); err != nil {
		t.Fatal(err)
	}
	hubUser := hubrbac.User(node)
	role, binding := hubrbac.Cluster(node)
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	caPEM, err := os.ReadFile(cp.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hubCred, err := cp.IssueCert(pki.LeafRequest{CommonName: hubUser, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{hubCred.Cert.Raw}, PrivateKey: hubCred.Key}}}}
	// The hub reaches the apiserver through a link the test can cut.
	uplink, err := link.Listen("127.0.0.1:0", strings.TrimPrefix(cp.Endpoint, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = uplink.Close() })
	// As the hub's server does, kept pod statuses go up when the cloud is back.
	var onOnline atomic.Pointer[func()]
	tracker, err := upstream.New(upstream.Config{Endpoints: []string{"https://" + uplink.Addr()}, Client: &http.Client{Transport: transport, Timeout: 2 * time.Second}, Interval: time.Second,
		OnChange: func(online bool) {
			if f := onOnline.Load(); online && f != nil {
				go (*f)()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go tracker.Run(ctx)
	t.Cleanup(cancel)
	serving, err := cp.IssueCert(pki.LeafRequest{CommonName: "sitegrid-hub", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	lists := &atomic.Int64{}
	clock := &testClock{}
	serve := func(tracker *upstream.Tracker, store *cache.Store) string {
		p, err := proxy.New(proxy.Config{Upstream: tracker, Transport: transport, Cache: store,
			TokenTransport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
			Impersonable:   []proxy.Identity{{User: "system:node:" + node, Groups: []string{"system:nodes"}}}, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		flush := func() {
			if endpoint, online := tracker.Online(); online {
				p.FlushPodStatuses(context.Background(), endpoint)
			}
		}
		onOnline.Store(&flush)
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A list, or a watch that starts with the whole list (watch-list).
			if q := r.URL.Query(); strings.HasSuffix(r.URL.Path, "/pods") && (q.Get("watch") == "" || q.Get("sendInitialEvents") == "true") {
				lists.Add(1)
			}
			p.ServeHTTP(w, r)
		}))
		srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool,
			Certificates: []tls.Certificate{{Certificate: [][]byte{serving.Cert.Raw}, PrivateKey: serving.Key}}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.URL
	}
	hubURL := serve(tracker, store)
	testenv.Eventually(t, 10*time.Second, func(context.Context) error {
		if _, ok := tracker.Online(); !ok {
			return &net.OpError{Op: "probe", Err: os.ErrDeadlineExceeded}
		}
		return nil
	})
	return &hubFixture{t: t, cp: cp, caPEM: caPEM, hubURL: hubURL, admin: admin, tracker: tracker, serve: serve, podLists: lists, uplink: uplink, transport: transport, clock: clock}
}

// waitOffline waits until the hub knows the cloud is gone.
func (f *hubFixture) waitOffline() {
	f.t.Helper()
	testenv.Eventually(f.t, 15*time.Second, func(context.Context) error {
		if _, ok := f.tracker.Online(); ok {
			return errors.New("hub still online")
		}
		return nil
	})
}

// newPod creates a pod bound to the hub's node.
func (f *hubFixture) newPod(name string) {
	f.t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	if _, err := f.admin.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// podInformer runs a synced informer of the node's pods through the hub, as
// the kubelet, until the test ends.
func (f *hubFixture) podInformer(handler toolscache.ResourceEventHandler) toolscache.SharedIndexInformer {
	f.t.Helper()
	kubelet := f.certClient("system:node:"+node, []string{"system:nodes"}, nil)
	factory := informers.NewSharedInformerFactoryWithOptions(kubelet, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = "spec.nodeName=" + node
	}))
	pods := factory.Core().V1().Pods().Informer()
	if handler != nil {
		if _, err := pods.AddEventHandler(handler); err != nil {
			f.t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	f.t.Cleanup(func() { close(stop) })
	factory.Start(stop)
	factory.WaitForCacheSync(stop)
	return pods
}

func whoami(t testing.TB, cs kubernetes.Interface) string {
	t.Helper()
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("whoami: %v", err)
	}
	return r.Status.UserInfo.Username
}

// TestIdentityThroughTheHub: clients reach the real apiserver through the
// hub as themselves, never with more rights, and are refused what the hub
// may not vouch for.
func TestIdentityThroughTheHub(t *testing.T) {
	f := startHub(t, nil)
	ctx := context.Background()

	kubelet := f.certClient("system:node:"+node, []string{"system:nodes"}, nil)
	if got := whoami(t, kubelet); got != "system:node:"+node {
		t.Errorf("the kubelet reaches the apiserver as %q", got)
	}
	if _, err := kubelet.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil {
		t.Errorf("kubelet cannot read its node through the hub: %v", err)
	}
	// No escalation: the Node authorizer still judges the kubelet.
	if _, err := kubelet.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("kubelet listing secrets through the hub: %v, want Forbidden", err)
	}

	// A watch streams through.
	w, err := kubelet.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + node})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	testenv.Modify(t, func(ctx context.Context) error {
		n, err := f.admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Labels["hub-test"] = "seen"
		_, err = f.admin.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
	deadline := time.After(20 * time.Second)
	for seen := false; !seen; {
		select {
		case ev := <-w.ResultChan():
			if nn, ok := ev.Object.(*corev1.Node); ok && ev.Type == watch.Modified && nn.Labels["hub-test"] == "seen" {
				seen = true
			}
		case <-deadline:
			t.Fatal("the label change did not reach the watch through the hub")
		}
	}

	// Another node's kubelet is not served by this hub.
	other := f.certClient("system:node:edge-2", []string{"system:nodes"}, nil)
	if _, err := other.CoreV1().Nodes().Get(ctx, "edge-2", metav1.GetOptions{}); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "does not serve") {
		t.Errorf("edge-2's kubelet through edge-1's hub: %v, want Forbidden", err)
	}
	// Extra groups in a certificate are not vouched for.
	if _, err := f.certClient("system:node:"+node, []string{"system:nodes", "system:masters"}, nil).CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("a certificate claiming system:masters: %v, want Forbidden", err)
	}
	// A certificate client may not borrow the hub's impersonation right.
	sneaky := f.certClient("system:node:"+node, []string{"system:nodes"}, func(c *rest.Config) { c.Impersonate.UserName = "admin" })
	if _, err := sneaky.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("impersonation through the hub: %v, want Forbidden", err)
	}

	// A bearer token passes through: the apiserver sees its owner.
	if _, err := f.admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := f.admin.CoreV1().ServiceAccounts("default").CreateToken(ctx, "kube-proxy", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := whoami(t, f.tokenClient(tok.Status.Token)); got != "system:serviceaccount:default:kube-proxy" {
		t.Errorf("a token client reaches the apiserver as %q", got)
	}

	// No credentials: refused by the hub itself.
	anon := kubernetes.NewForConfigOrDie(&rest.Config{Host: f.hubURL, TLSClientConfig: rest.TLSClientConfig{CAData: f.caPEM}})
	if _, err := anon.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("anonymous through the hub: %v, want Unauthorized", err)
	}
}

// TestOfflineAnswersAtOnce: with the cloud unreachable the hub says so in a
// Kubernetes Status, without waiting on the network.
func TestOfflineAnswersAtOnce(t *testing.T) {
	tracker, err := upstream.New(upstream.Config{Endpoints: []string{"https://198.18.255.1:6443"}, Client: http.DefaultClient})
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(proxy.Config{Upstream: tracker, Transport: http.DefaultTransport, TokenTransport: http.DefaultTransport})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/api/v1/nodes/edge-1", nil)
	req.Header.Set("Authorization", "Bearer x")
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"kind":"Status"`) {
		t.Errorf("offline answer %d %s", rec.Code, rec.Body.String())
	}
}

// TestServesFromCacheOffline: what node components read while the cloud was
// there, they read again when it is gone, also from a hub restarted while
// offline; what they never read is refused with a clear status.
func TestServesFromCacheOffline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	store, err := cache.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f := startHub(t, store)
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	if _, err := f.admin.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubelet := f.certClient("system:node:"+node, []string{"system:nodes"}, nil)
	online, err := kubelet.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	onNode := metav1.ListOptions{FieldSelector: "spec.nodeName=" + node}
	pods, err := kubelet.CoreV1().Pods("").List(ctx, onNode)
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("online list: %d pods, %v", len(pods.Items), err)
	}

	// The cloud goes away.
	f.cp.Stop()
	f.waitOffline()
	check := func(kubelet kubernetes.Interface) {
		t.Helper()
		n, err := kubelet.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil || n.ResourceVersion != online.ResourceVersion {
			t.Fatalf("offline node: %v (resourceVersion %q, want %q)", err, n.ResourceVersion, online.ResourceVersion)
		}
		list, err := kubelet.CoreV1().Pods("").List(ctx, onNode)
		if err != nil || len(list.Items) != 1 || list.Items[0].Name != "app" || list.ResourceVersion != pods.ResourceVersion {
			t.Fatalf("offline pods: %v, %+v", err, list)
		}
		if _, err := kubelet.CoreV1().ConfigMaps("default").Get(ctx, "never-read", metav1.GetOptions{}); !apierrors.IsServiceUnavailable(err) {
			t.Errorf("an uncached read offline: %v, want ServiceUnavailable", err)
		}
	}
	check(kubelet)

	// A hub restarted while offline still has it all.
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	reopened, err := cache.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	fresh, err := upstream.New(upstream.Config{Endpoints: []string{f.cp.Endpoint}, Client: &http.Client{Timeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	f.hubURL = f.serve(fresh, reopened)
	check(f.certClient("system:node:"+node, []string{"system:nodes"}, nil))
}

// TestInformerThroughOutage: a client-go informer through the hub sees
// changes while the cloud is there (and the hub writes them into its cache),
// keeps its store when the cloud goes, and does not re-list in a loop.
func TestInformerThroughOutage(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "cache.db")
	store, err := cache.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	f := startHub(t, store)
	f.newPod("app-1")
	pods := f.podInformer(nil)
	inStore := func(want int) {
		t.Helper()
		testenv.Eventually(t, 20*time.Second, func(context.Context) error {
			if n := len(pods.GetStore().List()); n != want {
				return fmt.Errorf("informer holds %d pods, want %d", n, want)
			}
			return nil
		})
	}
	inStore(1)

	// A change in the cloud reaches the informer, and the hub's cache.
	f.newPod("app-2")
	inStore(2)
	key := cache.Key{Identity: "user:system:node:" + node + "|system:nodes", Verb: cache.VerbList, Version: "v1", Resource: "pods", FieldSelector: "spec.nodeName=" + node}
	testenv.Eventually(t, 10*time.Second, func(context.Context) error {
		_, items, err := store.List(key)
		if err != nil || len(items) != 2 {
			return fmt.Errorf("cached list: %d items, %v", len(items), err)
		}
		return nil
	})

	// The cloud goes: the informer keeps its pods and does not re-list in a
	// loop.
	f.cp.Stop()
	f.waitOffline()
	time.Sleep(2 * time.Second) // the informer's watch breaks and is re-made
	before := f.podLists.Load()
	time.Sleep(5 * time.Second)
	if n := len(pods.GetStore().List()); n != 2 {
		t.Errorf("informer holds %d pods offline, want 2", n)
	}
	if lists := f.podLists.Load() - before; lists > 1 {
		t.Errorf("%d LISTs of pods in 5 s offline: the informer re-lists in a loop", lists)
	}
}

// TestKubeletStaysHealthyOffline: with the cloud gone, the kubelet's Lease
// renewal and node status patch (in protobuf, as the kubelet sends them) are
// answered, and it reads back what it wrote; other writes are refused.
func TestKubeletStaysHealthyOffline(t *testing.T) {
	store := openStore(t)
	f := startHub(t, store)
	ctx := context.Background()
	kubelet := f.certClient("system:node:"+node, []string{"system:nodes"}, func(c *rest.Config) {
		c.ContentType = "application/vnd.kubernetes.protobuf"
	})
	var lease *coordinationv1.Lease
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		var err error
		lease, err = kubelet.CoordinationV1().Leases("kube-node-lease").Get(ctx, node, metav1.GetOptions{})
		return err
	})
	if _, err := kubelet.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}

	f.cp.Stop()
	f.waitOffline()
	renew := metav1.NewMicroTime(time.Now().Truncate(time.Microsecond))
	lease.Spec.RenewTime = &renew
	got, err := kubelet.CoordinationV1().Leases("kube-node-lease").Update(ctx, lease, metav1.UpdateOptions{})
	if err != nil || got.Spec.RenewTime == nil || !got.Spec.RenewTime.Equal(&renew) {
		t.Fatalf("offline lease renewal: %v, %+v", err, got)
	}
	heartbeat := time.Now().UTC().Truncate(time.Second).Format(time.RFC3339)
	patch := fmt.Sprintf(`{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","lastHeartbeatTime":%q}]}}`, heartbeat)
	if _, err := kubelet.CoreV1().Nodes().PatchStatus(ctx, node, []byte(patch)); err != nil {
		t.Fatalf("offline node status patch: %v", err)
	}
	n, err := kubelet.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.LastHeartbeatTime.UTC().Format(time.RFC3339) == heartbeat {
			found = true
		}
	}
	if !found {
		t.Errorf("the kubelet does not read back its offline status: %+v", n.Status.Conditions)
	}
	if _, err := kubelet.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("an arbitrary write offline: %v, want ServiceUnavailable", err)
	}
}

// TestReconnect: the hub's uplink is cut while changes happen in the cloud;
// after it heals, an informer through the hub gets every change exactly
// once, and the hub's cache has them too.
func TestReconnect(t *testing.T) {
	store := openStore(t)
	f := startHub(t, store)
	ctx := context.Background()
	f.newPod("app-1")
	f.newPod("app-2")
	var mu sync.Mutex
	adds, deletes := map[string]int{}, map[string]int{}
	pods := f.podInformer(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { mu.Lock(); adds[o.(*corev1.Pod).Name]++; mu.Unlock() },
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			mu.Lock()
			deletes[o.(*corev1.Pod).Name]++
			mu.Unlock()
		},
	})

	// The site's uplink breaks; the cloud changes meanwhile.
	f.uplink.Cut()
	f.waitOffline()
	f.newPod("app-3")
	if err := f.admin.CoreV1().Pods("default").Delete(ctx, "app-1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if n := len(pods.GetStore().List()); n != 2 {
		t.Fatalf("offline, the informer holds %d pods, want the 2 it had", n)
	}

	f.uplink.Heal()
	names := func() []string {
		var out []string
		for _, o := range pods.GetStore().List() {
			out = append(out, o.(*corev1.Pod).Name)
		}
		sort.Strings(out)
		return out
	}
	testenv.Eventually(t, 30*time.Second, func(context.Context) error {
		if got := fmt.Sprint(names()); got != "[app-2 app-3]" {
			return fmt.Errorf("informer holds %s, want [app-2 app-3]", got)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if adds["app-1"] != 1 || adds["app-2"] != 1 || adds["app-3"] != 1 || deletes["app-1"] != 1 || len(deletes) != 1 {
		t.Errorf("events: adds %v deletes %v, want each exactly once", adds, deletes)
	}
	key := cache.Key{Identity: "user:system:node:" + node + "|system:nodes", Verb: cache.VerbList, Version: "v1", Resource: "pods", FieldSelector: "spec.nodeName=" + node}
	testenv.Eventually(t, 10*time.Second, func(context.Context) error {
		_, items, err := store.List(key)
		if err != nil {
			return err
		}
		var cached []string
		for _, it := range items {
			cached = append(cached, it.Name)
		}
		if fmt.Sprint(cached) != "[app-2 app-3]" {
			return fmt.Errorf("cache holds %v", cached)
		}
		return nil
	})
}

// TestOfflineStatusPatchChangesStatusOnly: offline, a kubelet's patch of
// its node's /status changes the status it reads back, and neither the spec
// nor the labels in the same patch: the apiserver resets the spec on
// /status, and the labels' admission cannot be judged without the cloud.
func TestOfflineStatusPatchChangesStatusOnly(t *testing.T) {
	store := openStore(t)
	f := startHub(t, store)
	ctx := context.Background()
	kubelet := f.certClient("system:node:"+node, []string{"system:nodes"}, nil)
	before, err := kubelet.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.uplink.Cut()
	f.waitOffline()
	heartbeat := time.Now().UTC().Truncate(time.Second).Format(time.RFC3339)
	patch := fmt.Sprintf(`{"metadata":{"labels":{"hub-test":"patched"}},"spec":{"unschedulable":true},`+
		`"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","lastHeartbeatTime":%q}]}}`, heartbeat)
	answered, err := kubelet.CoreV1().Nodes().PatchStatus(ctx, node, []byte(patch))
	if err != nil {
		t.Fatalf("offline node status patch: %v", err)
	}
	n, err := kubelet.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for what, got := range map[string]*corev1.Node{"the patch's answer": answered, "the node read back": n} {
		if got.Spec.Unschedulable {
			t.Errorf("%s: spec.unschedulable was set through /status", what)
		}
		if v, ok := got.Labels["hub-test"]; ok {
			t.Errorf("%s: label hub-test=%q was set through /status", what, v)
		}
		if len(got.Labels) != len(before.Labels) {
			t.Errorf("%s: labels %v, want %v", what, got.Labels, before.Labels)
		}
		ready := false
		for _, c := range got.Status.Conditions {
			ready = ready || c.Type == corev1.NodeReady && c.LastHeartbeatTime.UTC().Format(time.RFC3339) == heartbeat
		}
		if !ready {
			t.Errorf("%s: the status change is missing: %+v", what, got.Status.Conditions)
		}
	}
}

// TestFirstRequestsAfterCloudLoss: the requests that find the cloud gone,
// before the hub knows it is, are served as the requests after: kubectl's
// read of a Table nobody cached yet gets the cached objects, and a
// kubelet's Lease renewal (protobuf) is answered.
func TestFirstRequestsAfterCloudLoss(t *testing.T) {
	store := openStore(t)
	f := startHub(t, store)
	ctx := context.Background()
	// A hub whose tracker probes once, at the start: only requests find out
	// that the cloud is gone (two failures in a row).
	tracker, err := upstream.New(upstream.Config{Endpoints: []string{"https://" + f.uplink.Addr()},
		Client: &http.Client{Transport: f.transport, Timeout: 2 * time.Second}, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go tracker.Run(tctx)
	testenv.Eventually(t, 10*time.Second, func(context.Context) error {
		if _, ok := tracker.Online(); !ok {
			return errors.New("hub not online")
		}
		return nil
	})
	f.hubURL = f.serve(tracker, store)
	f.newPod("app")
	kubelet := f.certClient("system:node:"+node, []string{"system:nodes"}, func(c *rest.Config) {
		c.ContentType = "application/vnd.kubernetes.protobuf"
	})
	var lease *coordinationv1.Lease
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		lease, err = kubelet.CoordinationV1().Leases("kube-node-lease").Get(ctx, node, metav1.GetOptions{})
		return err
	})
	if pods, err := kubelet.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node}); err != nil || len(pods.Items) != 1 {
		t.Fatalf("online list: %v, %v", pods, err)
	}

	tableRead := func() (string, error) {
		raw, err := kubelet.CoreV1().RESTClient().Get().Resource("pods").Param("fieldSelector", "spec.nodeName="+node).
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json").
			Do(ctx).Raw()
		return string(raw), err
	}
	renewal := func() error {
		renew := metav1.NewMicroTime(time.Now().Truncate(time.Microsecond))
		lease.Spec.RenewTime = &renew
		got, err := kubelet.CoordinationV1().Leases("kube-node-lease").Update(ctx, lease, metav1.UpdateOptions{})
		if err == nil && (got.Spec.RenewTime == nil || !got.Spec.RenewTime.Equal(&renew)) {
			err = fmt.Errorf("renewed to %v, want %v", got.Spec.RenewTime, renew)
		}
		return err
	}
	online := func(want bool) {
		t.Helper()
		if _, ok := tracker.Online(); ok != want {
			t.Fatalf("tracker online=%v, want %v", ok, want)
		}
	}

	f.uplink.Cut()
	online(true)
	first, err := tableRead()
	if err != nil || !strings.Contains(first, `"kind":"PodList"`) || !strings.Contains(first, `"name":"app"`) {
		t.Errorf("kubectl's read that found the cloud gone: %v\n%s", err, first)
	}
	online(true)
	if err := renewal(); err != nil {
		t.Errorf("the Lease renewal that found the cloud gone: %v", err)
	}
	online(false)
	next, err := tableRead()
	if err != nil || next != first {
		t.Errorf("kubectl's next read offline: %v\n%s\nwant what the first read got:\n%s", err, next, first)
	}
	if err := renewal(); err != nil {
		t.Errorf("the next Lease renewal offline: %v", err)
	}
}
