// Command dns measures sitegrid-dns against a stock CoreDNS v1.15.0 (built
// from its module with every plugin) side by side in one run: the same
// Corefile zone, the same apiserver holding the same Services and
// EndpointSlices, each server on one core (taskset, GOMAXPROCS=1). It
// reports queries per second and p50/p99 latency under load, resident
// memory idle after the sync (the median and the highest of samples every
// 5 s over -idle), and the time from a Service's creation to its first
// answer. Medians of -rounds alternating rounds. docs/dns.md has the
// figures.
//
//	go run ./hack/bench/dns [-services 1000] [-endpoints 10] [-duration 10s] [-rounds 3] [-idle 1m]
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/gobuild"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/process"
)

const namespace = "bench"

// idleWindow is how long each server's idle memory is sampled (-idle).
var idleWindow time.Duration

type result struct {
	qps            float64
	p50, p99       time.Duration
	rssMiB         float64 // idle after the sync: the median of the idle window's samples
	rssMaxMiB      float64 // the idle window's highest sample
	loadedMiB      float64 // after the load
	anonMiB        float64 // of rssMiB: the heap and stacks (the rest is the binary's pages)
	changeToAnswer time.Duration
}

func main() {
	services := flag.Int("services", 1000, "Services, each with one EndpointSlice")
	endpoints := flag.Int("endpoints", 10, "endpoints per EndpointSlice")
	duration := flag.Duration("duration", 10*time.Second, "load per measurement")
	workers := flag.Int("workers", 16, "concurrent clients")
	rounds := flag.Int("rounds", 3, "alternating rounds of both servers")
	flag.DurationVar(&idleWindow, "idle", time.Minute, "how long resident memory is sampled idle, from 25 s after the start")
	flag.Parse()
	if err := run(context.Background(), *services, *endpoints, *duration, *workers, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, services, endpoints int, duration time.Duration, workers, rounds int) error {
	bin, err := kubebin.Ensure(ctx, kubebin.Options{Progress: os.Stderr})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "sitegrid-bench-dns-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cp, err := controlplane.Start(ctx, controlplane.Config{Dir: filepath.Join(dir, "cp"), Bin: bin, APIServerOnly: true,
		APIServerArgs: []string{"--service-cluster-ip-range=198.19.128.0/17"}})
	if err != nil {
		return err
	}
	defer cp.Stop()
	cfg := cp.RESTConfig()
	cfg.QPS, cfg.Burst = -1, 0
	admin, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := populate(ctx, admin, services, endpoints); err != nil {
		return err
	}
	ours := filepath.Join(dir, "sitegrid-dns")
	if out, err := gobuild.Command(ctx, ours, "./cmd/sitegrid-dns").CombinedOutput(); err != nil {
		return fmt.Errorf("build sitegrid-dns: %w\n%s", err, out)
	}
	stock, err := stockCoreDNS(ctx)
	if err != nil {
		return err
	}
	// The node the unit-names plugin reads; no StatefulSetGrid children,
	// so every query passes it.
	if err := controlplane.CreateNode(ctx, admin, controlplane.Node{Name: "bench-node", InternalIP: "198.18.0.10"}); err != nil {
		return err
	}
	results := map[string][]result{}
	for round := range rounds {
		for _, s := range []struct{ name, bin string }{{"sitegrid-dns", ours}, {"CoreDNS v1.15.0 (stock)", stock}} {
			r, err := measure(ctx, admin, cp.AdminKubeconfig, dir, s.bin, s.name == "sitegrid-dns", services, duration, workers, round)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			fmt.Printf("round %d %-24s %8.0f q/s  p50 %6s  p99 %6s  RSS idle %5.1f MiB (max %5.1f; heap and stacks %4.1f), loaded %5.1f MiB  change->answer %s\n",
				round+1, s.name, r.qps, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.rssMiB, r.rssMaxMiB, r.anonMiB, r.loadedMiB, r.changeToAnswer.Round(time.Millisecond))
			results[s.name] = append(results[s.name], r)
		}
	}
	fmt.Printf("\nmedians of %d rounds, %d Services x %d endpoints, %d clients, one core each:\n", rounds, services, endpoints, workers)
	base := median(results["CoreDNS v1.15.0 (stock)"])
	for _, name := range []string{"sitegrid-dns", "CoreDNS v1.15.0 (stock)"} {
		m := median(results[name])
		fmt.Printf("%-24s %8.0f q/s (%.2f of stock)  p50 %6s  p99 %6s  RSS idle %5.1f MiB (max %5.1f; heap and stacks %4.1f), loaded %5.1f MiB  change->answer %s\n", name, m.qps, m.qps/base.qps,
			m.p50.Round(time.Microsecond), m.p99.Round(time.Microsecond), m.rssMiB, m.rssMaxMiB, m.anonMiB, m.loadedMiB, m.changeToAnswer.Round(time.Millisecond))
	}
	return nil
}

// stockCoreDNS builds upstream CoreDNS v1.15.0 (its own go.mod, all its
// plugins) once into the cache.
func stockCoreDNS(ctx context.Context) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	gobin := filepath.Join(cache, "sitegrid", "bench", "coredns-v1.15.0")
	bin := filepath.Join(gobin, "coredns")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/coredns/coredns@v1.15.0")
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install github.com/coredns/coredns@v1.15.0: %w\n%s", err, out)
	}
	return bin, nil
}

func populate(ctx context.Context, cs kubernetes.Interface, services, endpoints int) error {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	sem := make(chan struct{}, 32)
	errs := make(chan error, services)
	var wg sync.WaitGroup
	for i := range services {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- createService(ctx, cs, "svc-"+strconv.Itoa(i), i, endpoints)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func createService(ctx context.Context, cs kubernetes.Interface, name string, i, endpoints int) error {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	if _, err := cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: namespace, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
	}
	for e := range endpoints {
		n := i*endpoints + e
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("198.19.%d.%d", n/250, n%250+1)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	_, err := cs.DiscoveryV1().EndpointSlices(namespace).Create(ctx, slice, metav1.CreateOptions{})
	return err
}

// corefile is the zone both servers serve; sitegrid-dns adds its plugins
// (the unit-local names, and its store behind the kubernetes plugin).
func corefile(port int, kubeconfig string, ours bool) string {
	units := ""
	if ours {
		units = "    sitegridunits cluster.local {\n        kubeconfig " + kubeconfig + "\n        node bench-node\n    }\n    kubestore\n"
	}
	return fmt.Sprintf("cluster.local:%d {\n    bind 127.0.0.1\n    errors\n    ready 127.0.0.1:%d\n%s    kubernetes cluster.local {\n        kubeconfig %s\n        ttl 5\n    }\n    cache 5\n    loadbalance\n}\n",
		port, port+1, units, kubeconfig)
}

func measure(ctx context.Context, admin kubernetes.Interface, kubeconfig, dir, bin string, ours bool, services int, duration time.Duration, workers, round int) (result, error) {
	port, err := controlplane.FreePort()
	if err != nil {
		return result{}, err
	}
	conf := filepath.Join(dir, fmt.Sprintf("Corefile-%v-%d", ours, round))
	if err := os.WriteFile(conf, []byte(corefile(port, kubeconfig, ours)), 0o600); err != nil {
		return result{}, err
	}
	p, err := process.Start(process.Spec{Name: filepath.Base(bin), Path: "taskset", Args: []string{"-c", "1", bin, "-conf", conf},
		Env: []string{"GOMAXPROCS=1"}, LogFile: conf + ".log"})
	if err != nil {
		return result{}, err
	}
	defer p.Stop(5 * time.Second)
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := p.WaitReady(rctx, 100*time.Millisecond, process.HTTPReady(nil, fmt.Sprintf("http://127.0.0.1:%d/ready", port+1))); err != nil {
		return result{}, fmt.Errorf("%w\n%s", err, process.LogTail(p.Spec.LogFile, 10))
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var r result
	// Idle after the sync: what a node pays to hold the zone, sampled
	// every 5 s over the window from 25 s on (past sitegrid-dns's first
	// release of start-up memory, at 20 s): pages released come back as
	// the collector and the watches touch them, so one sample would be a
	// low point.
	time.Sleep(25 * time.Second)
	var rss, anon []float64
	for end := time.Now().Add(idleWindow); ; time.Sleep(5 * time.Second) {
		mem, err := process.Status(p.PID())
		if err != nil {
			return result{}, err
		}
		rss, anon = append(rss, float64(mem["VmRSS"])/(1<<20)), append(anon, float64(mem["RssAnon"])/(1<<20))
		if time.Now().After(end) {
			break
		}
	}
	r.rssMiB, r.rssMaxMiB, r.anonMiB = medianOf(rss), slices.Max(rss), medianOf(anon)
	var lat []time.Duration
	var mu sync.Mutex
	var total atomic.Int64
	end := time.Now().Add(duration)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
			var mine []time.Duration
			for time.Now().Before(end) {
				m := new(dns.Msg)
				m.SetQuestion(fmt.Sprintf("svc-%d.%s.svc.cluster.local.", rand.IntN(services), namespace), dns.TypeA)
				start := time.Now()
				in, _, err := c.Exchange(m, addr)
				if err != nil || in.Rcode != dns.RcodeSuccess || len(in.Answer) == 0 {
					continue
				}
				mine = append(mine, time.Since(start))
				total.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(lat) == 0 {
		return result{}, fmt.Errorf("no query answered:\n%s", process.LogTail(p.Spec.LogFile, 10))
	}
	slices.Sort(lat)
	r.qps = float64(total.Load()) / duration.Seconds()
	r.p50, r.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	mem, err := process.Status(p.PID())
	if err != nil {
		return result{}, err
	}
	r.loadedMiB = float64(mem["VmRSS"]) / (1 << 20)
	// A Service made now: how long until this server answers it.
	name, index := fmt.Sprintf("new-%d-%v", round, ours), services+2*round
	if !ours {
		index++ // its endpoint's address differs from the other server's
	}
	created := time.Now()
	if err := createService(ctx, admin, name, index, 1); err != nil {
		return result{}, err
	}
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	for {
		m := new(dns.Msg)
		m.SetQuestion(name+"."+namespace+".svc.cluster.local.", dns.TypeA)
		if in, _, err := c.Exchange(m, addr); err == nil && in.Rcode == dns.RcodeSuccess && len(in.Answer) > 0 {
			r.changeToAnswer = time.Since(created)
			break
		}
		if time.Since(created) > time.Minute {
			return result{}, fmt.Errorf("%s not answered within a minute", name)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r, nil
}

func medianOf(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

func median(rs []result) result {
	pick := func(get func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return result{
		qps:            pick(func(r result) float64 { return r.qps }),
		p50:            time.Duration(pick(func(r result) float64 { return float64(r.p50) })),
		p99:            time.Duration(pick(func(r result) float64 { return float64(r.p99) })),
		rssMiB:         pick(func(r result) float64 { return r.rssMiB }),
		rssMaxMiB:      pick(func(r result) float64 { return r.rssMaxMiB }),
		loadedMiB:      pick(func(r result) float64 { return r.loadedMiB }),
		anonMiB:        pick(func(r result) float64 { return r.anonMiB }),
		changeToAnswer: time.Duration(pick(func(r result) float64 { return float64(r.changeToAnswer) })),
	}
}
