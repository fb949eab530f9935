package kubestore

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

func writeKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	c := clientcmdapi.NewConfig()
	c.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	c.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	c.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest"}
	c.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*c, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// serve starts one CoreDNS instance with a server of the kubernetes plugin
// for each of withStore (kubestore in front when true) and returns their
// addresses. One instance: the plugin's setup sets klog's logger, which
// races with the reflectors of an instance already running.
func serve(t *testing.T, kubeconfig, options string, withStore ...bool) ([]string, error) {
	t.Helper()
	var corefile string
	var addrs []string
	for _, with := range withStore {
		port, err := controlplane.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		store := ""
		if with {
			store = "    kubestore\n"
		}
		corefile += fmt.Sprintf("cluster.local:%d in-addr.arpa:%d {\n    bind 127.0.0.1\n%s    kubernetes cluster.local in-addr.arpa {\n        kubeconfig %s\n%s    }\n}\n",
			port, port, store, kubeconfig, options)
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", port))
	}
	i, err := caddy.Start(caddy.CaddyfileInput{ServerTypeName: "dns", Contents: []byte(corefile)})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = i.Stop(); i.ShutdownCallbacks() })
	return addrs, nil
}

func useDirectives(t *testing.T) {
	defer func(d []string) { t.Cleanup(func() { dnsserver.Directives = d }) }(dnsserver.Directives)
	dnsserver.Directives = []string{"bind", Name, "kubernetes"}
}

// answer is a query's rcode and its records, sorted, TTLs and SOA serials
// (times) left out.
func answer(t *testing.T, addr, name string, qtype uint16) string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, err := dns.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s: %v", dns.TypeToString[qtype], name, err)
	}
	var rrs []string
	for _, rr := range append(append(r.Answer, r.Ns...), r.Extra...) {
		rr.Header().Ttl = 0
		if soa, ok := rr.(*dns.SOA); ok {
			soa.Serial = 0
		}
		rrs = append(rrs, rr.String())
	}
	slices.Sort(rrs)
	return dns.RcodeToString[r.Rcode] + "\n" + strings.Join(rrs, "\n")
}

type question struct {
	name  string
	qtype uint16
}

var questions = []question{
	{"web.shop.svc.cluster.local.", dns.TypeA},
	{"web.shop.svc.cluster.local.", dns.TypeAAAA},
	{"web.shop.svc.cluster.local.", dns.TypeSRV},
	{"_http._tcp.web.shop.svc.cluster.local.", dns.TypeSRV},
	{"db.shop.svc.cluster.local.", dns.TypeA},
	{"db.shop.svc.cluster.local.", dns.TypeSRV},
	{"db-0.db.shop.svc.cluster.local.", dns.TypeA},
	{"10-0-0-12.db.shop.svc.cluster.local.", dns.TypeA},
	{"ext.shop.svc.cluster.local.", dns.TypeCNAME},
	{"lb.shop.svc.cluster.local.", dns.TypeA},
	{"gone.shop.svc.cluster.local.", dns.TypeA},
	{"web.nowhere.svc.cluster.local.", dns.TypeA},
	{"nothing.empty.svc.cluster.local.", dns.TypeA},
	{"*.shop.svc.cluster.local.", dns.TypeA},
	{"11.0.0.10.in-addr.arpa.", dns.TypePTR},
	{"12.0.0.10.in-addr.arpa.", dns.TypePTR},
	{"100.0.96.10.in-addr.arpa.", dns.TypePTR},
	{"cluster.local.", dns.TypeSOA},
	{"cluster.local.", dns.TypeNS},
	{"dns-version.cluster.local.", dns.TypeTXT},
}

// same waits until both servers answer every question alike.
func same(t *testing.T, store, own string, when string) {
	t.Helper()
	var diff string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		diff = ""
		for _, q := range questions {
			a, b := answer(t, store, q.name, q.qtype), answer(t, own, q.name, q.qtype)
			if a != b {
				diff += fmt.Sprintf("%s %s:\nkubestore: %s\nCoreDNS's store: %s\n", dns.TypeToString[q.qtype], q.name, a, b)
			}
		}
		if diff == "" {
			return
		}
	}
	t.Fatalf("%s, the answers differ:\n%s", when, diff)
}

func slice(name, service string, ready bool, ips ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for i, ip := range ips {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Hostname: ptr.To(fmt.Sprintf("%s-%d", service, i)),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: fmt.Sprintf("%s-%d", service, i)}})
	}
	return es
}

// TestRefusesWhatNeedsCoreDNSStore: each option the store does not keep is
// refused by name at start-up; and a CoreDNS that renamed a field the
// options are read from fails every start here. (It runs first: the stores
// it starts wait for their reflectors at stop, CoreDNS's own do not, and
// the plugin's setup sets klog's logger under running reflectors.)
func TestRefusesWhatNeedsCoreDNSStore(t *testing.T) {
	useDirectives(t)
	kubeconfig := writeKubeconfig(t, &rest.Config{Host: "https://127.0.0.1:1"}) // nothing listens
	for option, stanza := range map[string]string{
		"pods verified":          "pods verified",
		"labels":                 "labels app=web",
		"namespace_labels":       "namespace_labels team=shop",
		"zonal":                  "zonal",
		"apiserver_max_inflight": "apiserver_max_inflight 10",
	} {
		_, err := serve(t, kubeconfig, "        "+stanza+"\n", true)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", option)) || !strings.Contains(err.Error(), "needs CoreDNS's own store") {
			t.Errorf("%s: start-up error %v, want %q refused", stanza, err, option)
		}
	}
	// Options it keeps start.
	if _, err := serve(t, kubeconfig, "        pods insecure\n        noendpoints\n        ttl 5\n", true); err != nil {
		t.Errorf("pods insecure, noendpoints, ttl: %v", err)
	}
	if err := setup(caddy.NewTestController("dns", "kubestore extra")); err == nil {
		t.Error("kubestore took an argument")
	}
}

// TestSameAnswersAsCoreDNSStore runs the kubernetes plugin twice against
// one apiserver, once with kubestore and once with CoreDNS's own store, and
// asks both the same questions, before and after the objects change.
func TestSameAnswersAsCoreDNSStore(t *testing.T) {
	cfg := testenv.StartEnvtest(t)
	cs := clientset.NewForConfigOrDie(cfg)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"shop", "empty"} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		must(err)
	}
	port := []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}
	for _, svc := range []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{Ports: port}},
		{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: port}},
		{ObjectMeta: metav1.ObjectMeta{Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "www.example.test"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "lb"}, Spec: corev1.ServiceSpec{Ports: port, ExternalIPs: []string{"198.18.9.9"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "gone"}, Spec: corev1.ServiceSpec{Ports: port}},
	} {
		_, err := cs.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{})
		must(err)
	}
	for _, es := range []*discoveryv1.EndpointSlice{
		slice("web-a", "web", true, "10.0.0.11"),
		slice("db-a", "db", true, "10.0.0.12", "10.0.0.13"),
		slice("db-b", "db", false, "10.0.0.14"),
		// An address in two Services' slices.
		slice("gone-a", "gone", true, "10.0.0.11"),
	} {
		_, err := cs.DiscoveryV1().EndpointSlices("shop").Create(ctx, es, metav1.CreateOptions{})
		must(err)
	}
	web, err := cs.CoreV1().Services("shop").Get(ctx, "web", metav1.GetOptions{})
	must(err)
	// The PTR question for web's cluster IP.
	questions = append(questions, question{reverse(web.Spec.ClusterIP), dns.TypePTR})

	useDirectives(t)
	kubeconfig := writeKubeconfig(t, cfg)
	addrs, err := serve(t, kubeconfig, "", true, false)
	must(err)
	store, own := addrs[0], addrs[1]
	if got := answer(t, store, "db.shop.svc.cluster.local.", dns.TypeA); !strings.Contains(got, "10.0.0.12") || strings.Contains(got, "10.0.0.14") {
		t.Fatalf("the headless Service answers\n%s\nwant its ready endpoints", got)
	}
	same(t, store, own, "after the first list")

	// Changes: an endpoint turns ready, one moves, a Service goes, a
	// Service's external IP changes, a namespace goes.
	es, err := cs.DiscoveryV1().EndpointSlices("shop").Get(ctx, "db-b", metav1.GetOptions{})
	must(err)
	es.Endpoints[0].Conditions.Ready = ptr.To(true)
	_, err = cs.DiscoveryV1().EndpointSlices("shop").Update(ctx, es, metav1.UpdateOptions{})
	must(err)
	es, err = cs.DiscoveryV1().EndpointSlices("shop").Get(ctx, "web-a", metav1.GetOptions{})
	must(err)
	es.Endpoints[0].Addresses = []string{"10.0.0.21"}
	_, err = cs.DiscoveryV1().EndpointSlices("shop").Update(ctx, es, metav1.UpdateOptions{})
	must(err)
	must(cs.CoreV1().Services("shop").Delete(ctx, "gone", metav1.DeleteOptions{}))
	must(cs.DiscoveryV1().EndpointSlices("shop").Delete(ctx, "gone-a", metav1.DeleteOptions{}))
	lb, err := cs.CoreV1().Services("shop").Get(ctx, "lb", metav1.GetOptions{})
	must(err)
	lb.Spec.ExternalIPs = []string{"198.18.9.10"}
	_, err = cs.CoreV1().Services("shop").Update(ctx, lb, metav1.UpdateOptions{})
	must(err)
	must(cs.CoreV1().Namespaces().Delete(ctx, "empty", metav1.DeleteOptions{}))
	questions = append(questions, question{"21.0.0.10.in-addr.arpa.", dns.TypePTR}, question{"14.0.0.10.in-addr.arpa.", dns.TypePTR})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if got := answer(t, store, "web.shop.svc.cluster.local.", dns.TypeSRV); strings.Contains(got, "10-0-0-21") || time.Now().After(deadline) {
			break
		}
	}
	same(t, store, own, "after the changes")
}

func reverse(ip string) string {
	p := strings.Split(ip, ".")
	slices.Reverse(p)
	return strings.Join(p, ".") + ".in-addr.arpa."
}
