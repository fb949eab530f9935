package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/sitegrid/sitegrid/internal/testenv"
)

const protobuf = "application/vnd.kubernetes.protobuf"

// readerToken is a ServiceAccount token (as kube-proxy's and CoreDNS's)
// that may read pods, nodes and Services.
func (f *hubFixture) readerToken() string {
	f.t.Helper()
	ctx := context.Background()
	if _, err := f.admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reader"}}, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "reader"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "nodes", "services"}, Verbs: []string{"get", "list", "watch"}}}}
	if _, err := f.admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "reader"}, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "default", Name: "reader"}}}
	if _, err := f.admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	tok, err := f.admin.CoreV1().ServiceAccounts("default").CreateToken(ctx, "reader", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return tok.Status.Token
}

// hubTransport reaches the hub, trusting the cluster CA.
func (f *hubFixture) hubTransport() http.RoundTripper {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.caPEM)
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
}

// clientOf is a token client of host in protobuf (falling back to JSON, as
// kube-proxy and the kubelet ask) or JSON.
func (f *hubFixture) clientOf(host, token string, proto bool) kubernetes.Interface {
	cfg := &rest.Config{Host: host, BearerToken: token, QPS: -1, TLSClientConfig: rest.TLSClientConfig{CAData: f.caPEM}}
	// client-go's clientsets default to protobuf: a JSON client says so.
	cfg.ContentType, cfg.AcceptContentTypes = "application/json", "application/json"
	if proto {
		cfg.ContentType, cfg.AcceptContentTypes = protobuf, protobuf+","+"application/json"
	}
	return kubernetes.NewForConfigOrDie(cfg)
}

// eventLog records what an informer's handlers see: adds, deletes, and
// updates that change the object (a relist's same-version update is no
// event of the cloud's).
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(s string) { l.mu.Lock(); l.events = append(l.events, s); l.mu.Unlock() }

func (l *eventLog) reset() { l.mu.Lock(); l.events = nil; l.mu.Unlock() }

func (l *eventLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

func (l *eventLog) handler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { p := o.(*corev1.Pod); l.add("add " + p.Name + "@" + p.ResourceVersion) },
		UpdateFunc: func(old, o any) {
			if p, q := old.(*corev1.Pod), o.(*corev1.Pod); p.ResourceVersion != q.ResourceVersion {
				l.add("update " + q.Name + "@" + q.ResourceVersion + " " + q.Labels["v"])
			}
		},
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			l.add("delete " + o.(*corev1.Pod).Name)
		},
	}
}

func runInformer(t *testing.T, cs kubernetes.Interface, log *eventLog) toolscache.SharedIndexInformer {
	t.Helper()
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(log.handler()); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	factory.Start(stop)
	factory.WaitForCacheSync(stop)
	return inf
}

// TestProtobufClientsThroughTheHub: a protobuf client is answered in
// protobuf, online and from the cache offline, a JSON client in JSON, each
// from its own entry; a client-go informer in protobuf through the hub sees
// exactly the events an informer sees directly, online and across a cut.
func TestProtobufClientsThroughTheHub(t *testing.T) {
	store := openStore(t)
	f := startHub(t, store)
	ctx := context.Background()
	token := f.readerToken()
	f.newPod("app-1")
	f.newPod("app-2")

	direct, viaHub := &eventLog{}, &eventLog{}
	directInformer := runInformer(t, f.clientOf(f.cp.Endpoint, token, true), direct)
	hubInformer := runInformer(t, f.clientOf(f.hubURL, token, true), viaHub)
	// The informers started apart (kwok patched the pods in between): from
	// the moment their stores agree, they must see the same events.
	contents := func(inf toolscache.SharedIndexInformer) []string {
		var out []string
		for _, o := range inf.GetStore().List() {
			out = append(out, o.(*corev1.Pod).Name+"@"+o.(*corev1.Pod).ResourceVersion)
		}
		slices.Sort(out)
		return out
	}
	testenv.Eventually(t, 20*time.Second, func(context.Context) error {
		d, h := contents(directInformer), contents(hubInformer)
		if !slices.Equal(d, h) || len(d) != 2 {
			return fmt.Errorf("direct holds %q, through the hub %q", d, h)
		}
		// Handlers hear of a change after the store has it.
		for _, log := range []*eventLog{direct, viaHub} {
			for _, pod := range d {
				if !slices.ContainsFunc(log.get(), func(e string) bool { return strings.Contains(e, " "+pod) }) {
					return fmt.Errorf("no handler has heard of %s yet", pod)
				}
			}
		}
		return nil
	})
	direct.reset()
	viaHub.reset()
	same := func(what string) {
		t.Helper()
		testenv.Eventually(t, 20*time.Second, func(context.Context) error {
			if d, h := direct.get(), viaHub.get(); !slices.Equal(d, h) {
				return fmt.Errorf("%s: direct saw %q, through the hub %q", what, d, h)
			}
			return nil
		})
	}
	// Changes online: an add, an update, a delete.
	f.newPod("app-3")
	pod, err := f.admin.CoreV1().Pods("default").Get(ctx, "app-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Labels = map[string]string{"v": "2"}
	if _, err := f.admin.CoreV1().Pods("default").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.admin.CoreV1().Pods("default").Delete(ctx, "app-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	same("online changes")

	// Plain reads, both encodings: the answer is in the client's encoding.
	protoHub, jsonHub := f.clientOf(f.hubURL, token, true), f.clientOf(f.hubURL, token, false)
	answerType := func(accept string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, f.hubURL+"/api/v1/namespaces/default/pods", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept", accept)
		resp, err := (&http.Client{Transport: f.hubTransport()}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		// Read whole: a client that hangs up mid-list leaves the hub
		// nothing to keep.
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("LIST with Accept %q: %s: %s", accept, resp.Status, body)
		}
		return resp.Header.Get("Content-Type")
	}
	if ct := answerType(protobuf + ", application/json"); ct != protobuf {
		t.Errorf("a protobuf client is answered in %q", ct)
	}
	if ct := answerType("application/json"); ct != "application/json" {
		t.Errorf("a JSON client is answered in %q", ct)
	}
	online := map[string]*corev1.PodList{}
	for name, cs := range map[string]kubernetes.Interface{"protobuf": protoHub, "json": jsonHub} {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil || len(l.Items) != 2 {
			t.Fatalf("%s LIST through the hub: %v, %d pods", name, err, len(l.Items))
		}
		online[name] = l
		if _, err := cs.CoreV1().Pods("default").Get(ctx, "app-3", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The cut: both clients are answered from the cache in their own
	// encoding, the informer keeps its pods and does not re-list in a loop.
	f.uplink.Cut()
	f.waitOffline()
	for name, cs := range map[string]kubernetes.Interface{"protobuf": protoHub, "json": jsonHub} {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil || len(l.Items) != 2 || l.ResourceVersion != online[name].ResourceVersion {
			t.Fatalf("offline %s LIST: %v, %+v", name, err, l)
		}
		for i := range l.Items {
			if l.Items[i].Name != online[name].Items[i].Name || l.Items[i].ResourceVersion != online[name].Items[i].ResourceVersion || len(l.Items[i].ManagedFields) != 0 {
				t.Errorf("offline %s LIST, item %d: %s@%s (%d managedFields)", name, i, l.Items[i].Name, l.Items[i].ResourceVersion, len(l.Items[i].ManagedFields))
			}
		}
		if p, err := cs.CoreV1().Pods("default").Get(ctx, "app-3", metav1.GetOptions{}); err != nil || p.Name != "app-3" {
			t.Errorf("offline %s GET: %v", name, err)
		}
	}
	if ct := answerType(protobuf + ", application/json"); ct != protobuf {
		t.Errorf("offline, a protobuf client is answered in %q", ct)
	}
	if ct := answerType("application/json"); ct != "application/json" {
		t.Errorf("offline, a JSON client is answered in %q", ct)
	}
	if _, err := protoHub.CoreV1().Services("default").List(ctx, metav1.ListOptions{}); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("an offline LIST never made: %v, want ServiceUnavailable", err)
	}
	before := f.podLists.Load()
	time.Sleep(3 * time.Second) // the informer's watch breaks, is made again and held
	if lists := f.podLists.Load() - before; lists > 3 {
		t.Errorf("%d LISTs of pods in 3 s offline: the informer re-lists in a loop", lists)
	}
	if n := len(hubInformer.GetStore().List()); n != 2 {
		t.Errorf("the informer holds %d pods offline, want 2", n)
	}

	// A change while cut, then the heal: the informer through the hub
	// catches up with the same events.
	f.newPod("app-4")
	f.uplink.Heal()
	same("after the heal")
	if err := store.Check(); err != nil {
		t.Errorf("cache file: %v", err)
	}
}

// TestCompressedListKept: a large list passes through the hub compressed
// as the apiserver sent it (the client asked for gzip), and the hub keeps
// its own copy, decompressed, for offline.
func TestCompressedListKept(t *testing.T) {
	store := openStore(t)
	f := startHub(t, store)
	ctx := context.Background()
	token := f.readerToken()
	// 100 pods of over 2 KiB each: more than the 128 KiB from which the
	// apiserver compresses.
	big := strings.Repeat("x", 2048)
	for i := range 100 {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%03d", i), Namespace: "default", Annotations: map[string]string{"pad": big}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
		if _, err := f.admin.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, f.hubURL+"/api/v1/namespaces/default/pods", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", protobuf)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := (&http.Client{Transport: f.hubTransport()}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("LIST through the hub: %s, Content-Encoding %q; want it gzipped as the apiserver sent it", resp.Status, resp.Header.Get("Content-Encoding"))
	}
	// client-go asks for gzip too.
	cs := f.clientOf(f.hubURL, token, true)
	online, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil || len(online.Items) != 100 {
		t.Fatalf("online LIST: %v, %d pods", err, len(online.Items))
	}
	f.uplink.Cut()
	f.waitOffline()
	offline, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil || len(offline.Items) != 100 || offline.ResourceVersion != online.ResourceVersion || offline.Items[99].Annotations["pad"] != big {
		t.Fatalf("offline LIST: %v, %d pods at %q (online %q)", err, len(offline.Items), offline.ResourceVersion, online.ResourceVersion)
	}
}
