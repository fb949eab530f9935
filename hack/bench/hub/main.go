// Command hub measures sitegrid-hub against a real etcd and kube-apiserver,
// all numbers from one run:
//
//   - latency percentiles of GET and LIST, directly and through the hub;
//   - the hub's resident memory once node components' informers (nodes,
//     pods, services, EndpointSlices) have synced through it, with -nodes
//     nodes, -pods pods, -services Services and as many EndpointSlices of
//     -endpoints endpoints each;
//   - offline LIST throughput from the cache, with the uplink cut;
//   - the time from the cut to the first answer served from the cache.
//
// With -units, nodes are grouped into units and every Service has topology
// keys: the informers run as kube-proxy, whose EndpointSlices the hub
// filters to its own unit's endpoints.
//
// The hub runs as its own process (the real binary), so its memory is its
// own.
//
//	go run ./hack/bench/hub -nodes 100 -pods 2000 -services 1000 -endpoints 50
//	go run ./hack/bench/hub -nodes 1000 -units 100 -services 5000 -endpoints 50
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/gobuild"
	"github.com/sitegrid/sitegrid/internal/health"
	"github.com/sitegrid/sitegrid/internal/hub/config"
	"github.com/sitegrid/sitegrid/internal/hub/topology"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/link"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/process"
	"github.com/sitegrid/sitegrid/internal/rbac/hubrbac"
	tunnelserver "github.com/sitegrid/sitegrid/internal/tunnel/server"
)

type sizes struct {
	nodes, pods, services, endpoints, units int
	code, health, tunnel                    bool
}

func main() {
	var sz sizes
	flag.IntVar(&sz.nodes, "nodes", 100, "Nodes")
	flag.IntVar(&sz.pods, "pods", 2000, "Pods, spread over the nodes")
	flag.IntVar(&sz.services, "services", 1000, "Services, each with one EndpointSlice")
	flag.IntVar(&sz.endpoints, "endpoints", 50, "endpoints per EndpointSlice")
	flag.IntVar(&sz.units, "units", 0, "with N > 0: nodes in N units (label lab=unit-<n>), every Service with topology keys [lab], and the informers run as kube-proxy, so the hub filters their EndpointSlices")
	requests := flag.Int("requests", 500, "requests per latency measurement")
	flag.BoolVar(&sz.tunnel, "tunnel", false, "run the hub with its tunnel agent on, connected to a tunnel server (docs/tunnel.md)")
	flag.BoolVar(&sz.health, "health", false, "run the hub with distributed health on (a unit of its own node: memberlist, the unit's watches and its Lease)")
	flag.BoolVar(&sz.code, "code", false, "after the idle period, print which sections and packages of the hub's executable are resident")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, sz, *requests); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, sz sizes, requests int) error {
	bin, err := kubebin.Ensure(ctx, kubebin.Options{Progress: os.Stderr})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "sitegrid-bench-hub-")
	if err != nil {
		return err
	}
	defer func() {
		if os.Getenv("KEEP") == "" {
			os.RemoveAll(dir)
		} else {
			fmt.Println("kept", dir)
		}
	}()
	cp, err := controlplane.Start(ctx, controlplane.Config{Dir: filepath.Join(dir, "cp"), Bin: bin, APIServerOnly: true,
		APIServerArgs: []string{"--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000",
			"--service-cluster-ip-range=198.19.128.0/17"}}) // room for more than 4,096 Services
	if err != nil {
		return err
	}
	defer cp.Stop()
	adminCfg := cp.RESTConfig()
	adminCfg.QPS, adminCfg.Burst = -1, 0
	admin, err := kubernetes.NewForConfig(adminCfg)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := populate(ctx, admin, sz); err != nil {
		return err
	}
	fmt.Printf("cluster: %d nodes, %d pods, %d services, %d EndpointSlices of %d endpoints (created in %s)\n",
		sz.nodes, sz.pods, sz.services, sz.services, sz.endpoints, time.Since(start).Round(time.Second))

	token, err := readerToken(ctx, admin)
	if err != nil {
		return err
	}
	var tunnelAgents string
	if sz.tunnel {
		if tunnelAgents, err = startTunnel(ctx, cp, admin); err != nil {
			return err
		}
	}
	// The apiserver's own watches (its loopback informers), before the hub.
	baseWatches, err := longRunningWatches(ctx, admin)
	if err != nil {
		return err
	}
	hub, err := startHub(ctx, cp, dir, sz.health, tunnelAgents)
	if err != nil {
		return err
	}
	defer hub.stop()
	if sz.tunnel {
		if err := waitTunnel(ctx, hub.health); err != nil {
			return err
		}
		fmt.Println("tunnel: the hub's agent holds its session")
	}
	caPEM, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return err
	}
	// Clients in protobuf (client-go's clientset default for built-in
	// types, how the kubelet, kube-proxy and CoreDNS talk) and in JSON
	// (kubectl, clients of custom resources).
	clientFor := func(host, userAgent, contentType string) *kubernetes.Clientset {
		return kubernetes.NewForConfigOrDie(&rest.Config{Host: host, BearerToken: token, QPS: -1, UserAgent: userAgent, TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
			ContentConfig: rest.ContentConfig{ContentType: contentType, AcceptContentTypes: contentType}})
	}
	const protobuf = "application/vnd.kubernetes.protobuf"
	encodings := []struct {
		name           string
		direct, viaHub *kubernetes.Clientset
	}{
		{"protobuf", clientFor(cp.Endpoint, "", protobuf), clientFor("https://"+hub.api, "", protobuf)},
		{"json", clientFor(cp.Endpoint, "", "application/json"), clientFor("https://"+hub.api, "", "application/json")},
	}
	viaHub := encodings[0].viaHub
	informed := viaHub
	if sz.units > 0 {
		// The hub runs on node-0, in unit-0; kube-proxy's view is filtered.
		informed = clientFor("https://"+hub.api, "kube-proxy/bench", protobuf)
	}

	// Node components' informers, through the hub: everything gets cached.
	start = time.Now()
	stopInformers := make(chan struct{})
	defer close(stopInformers)
	factory := informers.NewSharedInformerFactory(informed, 0)
	factory.Core().V1().Nodes().Informer()
	factory.Core().V1().Pods().Informer()
	factory.Core().V1().Services().Informer()
	factory.Discovery().V1().EndpointSlices().Informer()
	factory.Start(stopInformers)
	for typ, ok := range factory.WaitForCacheSync(stopInformers) {
		if !ok {
			return fmt.Errorf("informer %v did not sync through the hub", typ)
		}
	}
	fmt.Printf("informers synced through the hub in %s\n", time.Since(start).Round(time.Millisecond))
	if sz.units > 0 {
		kept := 0
		for _, o := range factory.Discovery().V1().EndpointSlices().Informer().GetStore().List() {
			kept += len(o.(*discoveryv1.EndpointSlice).Endpoints)
		}
		fmt.Printf("kube-proxy's store through the hub: %d endpoints of the cluster's %d (unit-0's share: %d nodes of %d)\n",
			kept, sz.services*sz.endpoints, (sz.nodes+sz.units-1)/sz.units, sz.nodes)
	}
	if sz.health {
		// Health runs: its member publishes the unit's report.
		deadline := time.Now().Add(60 * time.Second)
		for {
			leases, err := admin.CoordinationV1().Leases(health.Namespace).List(ctx, metav1.ListOptions{})
			if err == nil && len(leases.Items) > 0 && ptr.Deref(leases.Items[0].Spec.HolderIdentity, "") == "node-0" {
				fmt.Printf("health: node-0's member published Lease %s/%s\n", health.Namespace, leases.Items[0].Name)
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("health on, but no unit Lease from node-0 within 60 s: %v", err)
			}
			time.Sleep(time.Second)
		}
	}
	watches, err := longRunningWatches(ctx, admin)
	if err != nil {
		return err
	}
	total, byResource := watchesAdded(baseWatches, watches)
	fmt.Printf("watches the node holds on the cloud: %d (%s; its clients' informers: nodes, pods, services, endpointslices; the rest the hub's own)\n", total, byResource)
	// Plain LISTs too, in both encodings (what kubectl and a restarted
	// kubelet do), so the offline measurements below read list entries.
	for _, e := range encodings {
		if _, err := e.viaHub.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err != nil {
			return err
		}
		if _, err := e.viaHub.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{}); err != nil {
			return err
		}
	}
	// Writes land within a second or two; the Go runtime hands freed memory
	// back to the system gradually and collects garbage when its heap goal
	// is reached, so memory is sampled every second from 5 s to 35 s of
	// idling (the hub still probes the cloud and receives bookmarks), with
	// details at both ends.
	var rss, anon []int64
	for i := 1; i <= 35; i++ {
		time.Sleep(time.Second)
		mem, err := process.Status(hub.proc.PID())
		if err != nil {
			return err
		}
		if i >= 5 { // the hub releases memory 2 s after the last large list
			rss, anon = append(rss, mem["VmRSS"]), append(anon, mem["RssAnon"])
		}
		if i != 5 && i != 35 {
			continue
		}
		fi, err := os.Stat(hub.cachePath)
		if err != nil {
			return err
		}
		byFile, err := process.ResidentByFile(hub.proc.PID())
		if err != nil {
			return err
		}
		if stats, err := goMemory(hub.health); err == nil {
			fmt.Printf("  Go runtime: %s\n", stats)
		}
		fmt.Printf("hub memory, everything cached, %ds idle: RSS %s (anonymous %s, file-backed %s: the binary %s, the cache file %s), peak RSS %s; cache file %s\n",
			i, mib(mem["VmRSS"]), mib(mem["RssAnon"]), mib(mem["RssFile"]+mem["RssShmem"]), mib(byFile[hub.binary]), mib(byFile[hub.cachePath]), mib(mem["VmHWM"]), mib(fi.Size()))
	}
	slices.Sort(rss)
	slices.Sort(anon)
	fmt.Printf("hub RSS from 5 s to 35 s idle, sampled every second: min %s, median %s, max %s (%.1f MB); anonymous min %s, median %s, max %s\n",
		mib(rss[0]), mib(rss[len(rss)/2]), mib(rss[len(rss)-1]), float64(rss[len(rss)-1])/1e6, mib(anon[0]), mib(anon[len(anon)/2]), mib(anon[len(anon)-1]))
	if sz.code {
		sections, packages, err := residentCode(hub.proc.PID(), hub.binary)
		if err != nil {
			return err
		}
		fmt.Println("resident executable pages by section:")
		for _, r := range sections {
			fmt.Printf("  %8s  %s\n", mib(r.bytes), r.name)
		}
		fmt.Println("resident executable pages by package (top 40):")
		for _, r := range packages[:min(40, len(packages))] {
			fmt.Printf("  %8s  %s\n", mib(r.bytes), r.name)
		}
	}

	// Latency, direct and through the hub, same client, same requests, in
	// both encodings.
	fmt.Printf("\nlatency over %d requests each (LIST all: a tenth)    p50       p90       p99     p50 hub/direct\n", requests)
	podNS := "ns-0"
	for _, e := range encodings {
		for _, m := range []struct {
			name string
			call func(*kubernetes.Clientset) error
		}{
			{"GET node", func(cs *kubernetes.Clientset) error {
				_, err := cs.CoreV1().Nodes().Get(ctx, "node-0", metav1.GetOptions{})
				return err
			}},
			{fmt.Sprintf("LIST pods of a namespace (%d)", sz.pods/10), func(cs *kubernetes.Clientset) error {
				_, err := cs.CoreV1().Pods(podNS).List(ctx, metav1.ListOptions{})
				return err
			}},
			{fmt.Sprintf("LIST all pods (%d)", sz.pods), func(cs *kubernetes.Clientset) error {
				_, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
				return err
			}},
			{fmt.Sprintf("LIST all services (%d)", sz.services), func(cs *kubernetes.Clientset) error {
				_, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
				return err
			}},
			// What the offline EndpointSlice LIST below compares with.
			{fmt.Sprintf("LIST all EndpointSlices (%d)", sz.services), func(cs *kubernetes.Clientset) error {
				_, err := cs.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
				return err
			}},
		} {
			n := requests
			if strings.HasPrefix(m.name, "LIST all") {
				n = requests / 10
			}
			var p50 [2]time.Duration
			for i, side := range []struct {
				name string
				cs   *kubernetes.Clientset
			}{{"direct", e.direct}, {"hub", e.viaHub}} {
				d, err := percentiles(n, func() error { return m.call(side.cs) })
				if err != nil {
					return fmt.Errorf("%s %s %s: %w", e.name, m.name, side.name, err)
				}
				p50[i] = d[0]
				ratio := ""
				if i == 1 {
					ratio = fmt.Sprintf("  %.2fx (%+.2f ms)", float64(p50[1])/float64(p50[0]), float64(p50[1]-p50[0])/float64(time.Millisecond))
				}
				fmt.Printf("  %-8s %-30s %-6s %s  %s  %s%s\n", e.name, m.name, side.name, ms(d[0]), ms(d[1]), ms(d[2]), ratio)
			}
		}
	}

	// Cut the uplink: the first answer from the cache, then offline LISTs.
	cut := time.Now()
	hub.link.Cut()
	for {
		_, err := viaHub.CoreV1().Nodes().Get(ctx, "node-0", metav1.GetOptions{})
		if err == nil {
			break
		}
		if time.Since(cut) > 30*time.Second {
			return fmt.Errorf("no answer from the cache 30s after the cut: %w", err)
		}
	}
	fmt.Printf("\nfrom the cut to the first answer from the cache: %s\n", ms(time.Since(cut)))
	for _, e := range encodings {
		for _, m := range []struct {
			name string
			call func() error
		}{
			{fmt.Sprintf("LIST all pods (%d)", sz.pods), func() error {
				l, err := e.viaHub.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
				if err == nil && len(l.Items) != sz.pods {
					err = fmt.Errorf("%d pods", len(l.Items))
				}
				return err
			}},
			{fmt.Sprintf("LIST all EndpointSlices (%d)", sz.services), func() error {
				l, err := e.viaHub.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
				if err == nil && len(l.Items) < sz.services {
					err = fmt.Errorf("%d slices", len(l.Items))
				}
				return err
			}},
		} {
			d, err := percentiles(20, m.call)
			if err != nil {
				return fmt.Errorf("offline %s %s: %w", e.name, m.name, err)
			}
			fmt.Printf("offline %-8s %-30s p50 %s, p90 %s\n", e.name, m.name, ms(d[0]), ms(d[1]))
		}
	}
	mem, err := process.Status(hub.proc.PID())
	if err != nil {
		return err
	}
	fmt.Printf("hub memory after the offline LISTs: RSS %s (anonymous %s), peak RSS %s\n", mib(mem["VmRSS"]), mib(mem["RssAnon"]), mib(mem["VmHWM"]))
	return nil
}

// longRunningWatches reads the apiserver's count of open watches by
// resource; less the apiserver's own, in this benchmark every one comes from
// the hub, for its clients or itself.
func longRunningWatches(ctx context.Context, admin kubernetes.Interface) (map[string]int, error) {
	raw, err := admin.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_longrunning_requests{") || !strings.Contains(line, `verb="WATCH"`) {
			continue
		}
		f := strings.Fields(line)
		_, rest, ok := strings.Cut(line, `resource="`)
		if len(f) != 2 || !ok {
			continue
		}
		resource, _, _ := strings.Cut(rest, `"`)
		v, _ := strconv.ParseFloat(f[1], 64)
		out[resource] += int(v)
	}
	return out, nil
}

// watchesAdded is what after holds more than before, per resource, and in
// all.
func watchesAdded(before, after map[string]int) (int, string) {
	total := 0
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(after)) {
		if d := after[r] - before[r]; d != 0 {
			total += d
			parts = append(parts, fmt.Sprintf("%s %d", r, d))
		}
	}
	return total, strings.Join(parts, ", ")
}

// populate creates the cluster: nodes, pods spread over them in ten
// namespaces, Services, and one EndpointSlice per Service.
func populate(ctx context.Context, cs kubernetes.Interface, sz sizes) error {
	for i := 0; i < 10; i++ {
		ns := "ns-" + strconv.Itoa(i)
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		// No controller-manager here to make the namespace's default
		// ServiceAccount, which pod admission asks for.
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	work := make(chan func() error)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				if err := f(); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := 0; i < sz.nodes; i++ {
		n := controlplane.Node{Name: "node-" + strconv.Itoa(i), InternalIP: fmt.Sprintf("198.18.%d.%d", 1+i/200, 10+i%200)}
		if sz.units > 0 {
			n.Labels = map[string]string{"lab": "unit-" + strconv.Itoa(i%sz.units)}
		}
		work <- func() error { return controlplane.CreateNode(ctx, cs, n) }
	}
	for i := 0; i < sz.pods; i++ {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "pod-" + strconv.Itoa(i), Namespace: "ns-" + strconv.Itoa(i%10), Labels: map[string]string{"app": "app-" + strconv.Itoa(i%50)}},
			Spec: corev1.PodSpec{NodeName: "node-" + strconv.Itoa(i%sz.nodes), Containers: []corev1.Container{{
				Name: "app", Image: "registry.example/app:1.0", Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				Env: []corev1.EnvVar{{Name: "MODE", Value: "edge"}},
			}}},
		}
		work <- func() error {
			_, err := cs.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
			return err
		}
	}
	for i := 0; i < sz.services; i++ {
		ns, name := "ns-"+strconv.Itoa(i%10), "svc-"+strconv.Itoa(i)
		work <- func() error {
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
			if sz.units > 0 {
				svc.Annotations = map[string]string{topology.AnnotationSuperEdge: `["lab"]`}
			}
			if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				return err
			}
			slice := &discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
			}
			for e := 0; e < sz.endpoints; e++ {
				node := "node-" + strconv.Itoa((i+e)%sz.nodes)
				slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
					Addresses:  []string{fmt.Sprintf("198.19.%d.%d", e, 1+i%250)},
					Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
					NodeName:   &node,
					TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: fmt.Sprintf("pod-%d-%d", i, e)},
				})
			}
			_, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{})
			return err
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// readerToken makes a ServiceAccount that reads what node components read
// (kube-proxy's and CoreDNS's permissions plus pods), and returns its token:
// the hub passes it through.
func readerToken(ctx context.Context, cs kubernetes.Interface) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "node-reader", Namespace: "default"}}
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "node-reader"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes", "pods", "services"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
	}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "node-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "node-reader"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "node-reader", Namespace: "default"}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	tr, err := cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, "node-reader",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

type hubProcess struct {
	health    string
	proc      *process.Process
	binary    string
	link      *link.Link
	api       string
	cachePath string
}

func (h *hubProcess) stop() {
	h.proc.Stop(10 * time.Second)
	_ = h.link.Close()
}

// startHub builds and starts sitegrid-hub, reaching the apiserver through a
// link the benchmark can cut.
func startHub(ctx context.Context, cp *controlplane.ControlPlane, dir string, withHealth bool, tunnelAgents string) (*hubProcess, error) {
	const node = "node-0"
	apiserver := strings.TrimPrefix(cp.Endpoint, "https://")
	up, err := link.Listen("127.0.0.1:0", apiserver)
	if err != nil {
		return nil, err
	}
	admin, err := cp.Clientset()
	if err != nil {
		return nil, err
	}
	role, binding := hubrbac.Cluster(node)
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	serving, err := cp.IssueCert(pki.LeafRequest{CommonName: "sitegrid-hub", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	if err != nil {
		return nil, err
	}
	cred, err := cp.IssueCert(pki.LeafRequest{CommonName: hubrbac.User(node), Client: true})
	if err != nil {
		return nil, err
	}
	servingCert, servingKey, err := pki.WriteKeyPair(dir, "serving", serving.Cert, serving.Key)
	if err != nil {
		return nil, err
	}
	credCert, credKey, err := pki.WriteKeyPair(dir, "hub", cred.Cert, cred.Key)
	if err != nil {
		return nil, err
	}
	ports := [3]int{}
	for i := range ports {
		if ports[i], err = controlplane.FreePort(); err != nil {
			return nil, err
		}
	}
	h := &hubProcess{link: up, api: "127.0.0.1:" + strconv.Itoa(ports[0]), cachePath: filepath.Join(dir, "cache", "cache.db")}
	health := "127.0.0.1:" + strconv.Itoa(ports[1])
	h.health = health
	cfg := config.HubConfiguration{TypeMeta: config.TypeMeta,
		NodeName: node, ListenAddress: h.api, HealthAddress: health,
		ServingCertFile: servingCert, ServingKeyFile: servingKey, ClientCAFile: cp.CAFile,
		Servers: []string{"https://" + up.Addr()}, ServerCAFile: cp.CAFile,
		ClientCertFile: credCert, ClientKeyFile: credKey, CachePath: h.cachePath,
		ProbeInterval: metav1.Duration{Duration: 500 * time.Millisecond},
	}
	if tunnelAgents != "" {
		// The stand-in kubelet port is never dialled: the agent is idle, as
		// on a node nobody is debugging.
		cfg.Tunnel = config.Tunnel{Servers: []string{tunnelAgents}}
	}
	if withHealth {
		if err := setupHealth(ctx, admin, node); err != nil {
			return nil, err
		}
		cfg.Health = config.Health{UnitKey: benchUnitKey, BindAddress: "127.0.0.1:" + strconv.Itoa(ports[2])}
	}
	config, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	configPath := filepath.Join(dir, "hub.yaml")
	if err := os.WriteFile(configPath, config, 0o600); err != nil {
		return nil, err
	}
	binPath := filepath.Join(dir, "sitegrid-hub")
	build := gobuild.Command(ctx, binPath, "./cmd/sitegrid-hub")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build sitegrid-hub: %w\n%s", err, out)
	}
	h.binary = binPath
	if h.proc, err = process.Start(process.Spec{Name: "sitegrid-hub", Path: binPath, Args: []string{"--config", configPath}, LogFile: filepath.Join(dir, "hub.log")}); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = h.proc.WaitReady(wctx, 100*time.Millisecond, process.HTTPReady(nil, "http://"+health+"/readyz"))
	if err != nil {
		h.stop()
		return nil, err
	}
	return h, nil
}

// startTunnel runs a tunnel server in this process (the hub's memory is
// its own process's) for the hub's agent, and returns where agents connect.
func startTunnel(ctx context.Context, cp *controlplane.ControlPlane, admin kubernetes.Interface) (string, error) {
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sitegrid-system"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	kp, err := cp.IssueCert(pki.LeafRequest{CommonName: "sitegrid-tunnel", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	if err != nil {
		return "", err
	}
	caPEM, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert := &tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key}
	srv, err := tunnelserver.New(tunnelserver.Config{Client: admin, Namespace: "sitegrid-system", Replica: "bench", AgentAddress: "127.0.0.1:0",
		ServingCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil }, NodeCAs: pool,
		ConnectSocket: filepath.Join(cp.Dir, "tunnel.sock")})
	if err != nil {
		return "", err
	}
	go func() { _ = srv.Run(ctx) }()
	return srv.AgentAddr(), nil
}

// waitTunnel waits until the hub's metrics say its agent is connected.
func waitTunnel(ctx context.Context, health string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if resp, err := http.Get("http://" + health + "/metrics"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), "\nsitegrid_hub_tunnel_connected 1\n") {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the hub's tunnel agent did not connect")
}

// benchUnitKey is the unit label of the hub's node with -health: a unit of
// one member.
const benchUnitKey = "bench-unit"

// setupHealth gives node a unit of its own, creates the units' gossip key
// and lets node's hub read it and write its unit's Lease.
func setupHealth(ctx context.Context, admin kubernetes.Interface, node string) error {
	n, err := admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	n.Labels[benchUnitKey] = "solo"
	if _, err := admin.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		return err
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: health.Namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	if _, err := admin.CoreV1().Secrets(health.Namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: health.GossipKeySecret},
		Data: map[string][]byte{"keys": []byte(base64.StdEncoding.EncodeToString(key) + "\n")}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	role, binding := hubrbac.Health(node)
	if _, err := admin.RbacV1().Roles(health.Namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err = admin.RbacV1().RoleBindings(health.Namespace).Create(ctx, binding, metav1.CreateOptions{})
	return err
}

// percentiles runs call n times and returns p50, p90 and p99.
func percentiles(n int, call func() error) ([3]time.Duration, error) {
	d := make([]time.Duration, 0, n)
	for i := 0; i < n+n/10; i++ { // the first tenth warms up
		start := time.Now()
		if err := call(); err != nil {
			return [3]time.Duration{}, err
		}
		if i >= n/10 {
			d = append(d, time.Since(start))
		}
	}
	slices.Sort(d)
	at := func(p float64) time.Duration { return d[int(p*float64(len(d)-1))] }
	return [3]time.Duration{at(0.50), at(0.90), at(0.99)}, nil
}

// memory reads a process's memory counters from /proc, in bytes.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ms(d time.Duration) string { return fmt.Sprintf("%7.2f ms", float64(d)/float64(time.Millisecond)) }

// goMemory reads the Go runtime's memory figures from the hub's /metrics.
func goMemory(addr string) (string, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	want := []string{"go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_next_gc_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_mspan_inuse_bytes", "go_memstats_gc_sys_bytes", "go_memstats_other_sys_bytes", "go_memstats_buck_hash_sys_bytes", "go_memstats_sys_bytes", "go_goroutines"}
	got := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && slices.Contains(want, f[0]) {
			got[f[0]] = f[1]
		}
	}
	var out []string
	for _, w := range want {
		v, _ := strconv.ParseFloat(got[w], 64)
		if w == "go_goroutines" {
			out = append(out, fmt.Sprintf("%s %.0f", strings.TrimPrefix(w, "go_"), v))
			continue
		}
		out = append(out, fmt.Sprintf("%s %s", strings.TrimSuffix(strings.TrimPrefix(w, "go_memstats_"), "_bytes"), mib(int64(v))))
	}
	return strings.Join(out, ", "), sc.Err()
}
