// Command sites measures the NodeUnit and NodeGroup controllers at scale:
// a real etcd and kube-apiserver, -nodes nodes spread over -units sites, and
// sitegrid-manager in this process. It reports the time from creating the
// NodeGroup to every node labelled and every unit in place, the API writes
// the manager made meanwhile, the writes it made in a following idle
// period, which must be zero, and the reconciles one node's relabel costs.
//
//	go run ./hack/bench/sites -nodes 5000 -units 500 -idle 1m
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/config"
	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/manager"
	"github.com/sitegrid/sitegrid/internal/process"
)

const siteKey = "bench.sitegrid.io/site"

var (
	managerQPS  float32
	stopProfile = func() {}
	// apiServerProfile, when set, is where a CPU profile of kube-apiserver
	// over the first apiServerProfileFor of the labelling is written.
	apiServerProfile    string
	apiServerProfileFor time.Duration
	heapProfile         string
)

func main() {
	nodes := flag.Int("nodes", 5000, "simulated nodes")
	units := flag.Int("units", 500, "sites (NodeUnits) the nodes are spread over")
	idle := flag.Duration("idle", time.Minute, "idle period after convergence in which writes are counted")
	qps := flag.Float64("qps", 500, "the manager's client QPS (sitegrid-manager --kube-api-qps)")
	flag.StringVar(&heapProfile, "memprofile", "", "write a heap profile of this process (the manager and the benchmark's node watch) once converged")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process (the manager) until convergence")
	flag.StringVar(&apiServerProfile, "apiserver-cpuprofile", "", "write a CPU profile of kube-apiserver (started with --profiling) over the start of the labelling")
	flag.DurationVar(&apiServerProfileFor, "apiserver-profile-for", 30*time.Second, "how long -apiserver-cpuprofile profiles")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard()) // the numbers are the output
	managerQPS = float32(*qps)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		stopProfile = func() { pprof.StopCPUProfile(); _ = f.Close() }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *nodes, *units, *idle); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// writeCounter counts the manager's API writes by verb and resource.
type writeCounter struct {
	mu     sync.Mutex
	counts map[string]int
	total  atomic.Int64
}

func (w *writeCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method != http.MethodGet {
			// .../<resource> for a create, .../<resource>/<name>[/status]
			// otherwise.
			parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
			res := parts[len(parts)-1]
			switch {
			case res == "status" && len(parts) >= 3:
				res = parts[len(parts)-3] + "/status"
			case req.Method != http.MethodPost && len(parts) >= 2:
				res = parts[len(parts)-2]
			}
			w.mu.Lock()
			w.counts[req.Method+" "+res]++
			w.mu.Unlock()
			w.total.Add(1)
		}
		return rt.RoundTrip(req)
	})
}

func (w *writeCounter) snapshot() (int64, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	keys := make([]string, 0, len(w.counts))
	for k := range w.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "    %-40s %d\n", k, w.counts[k])
	}
	return w.total.Load(), b.String()
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func run(ctx context.Context, nNodes, nUnits int, idle time.Duration) error {
	bin, err := kubebin.Ensure(ctx, kubebin.Options{Progress: os.Stderr})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "sitegrid-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cpCfg := controlplane.Config{Dir: dir, Bin: bin, APIServerOnly: true}
	if apiServerProfile != "" {
		cpCfg.APIServerArgs = []string{"--profiling=true"}
	}
	cp, err := controlplane.Start(ctx, cpCfg)
	if err != nil {
		return err
	}
	defer cp.Stop()
	if err := lab.InstallManifests(ctx, cp.RESTConfig(), config.Manifests); err != nil {
		return err
	}
	admin := cp.RESTConfig()
	admin.QPS, admin.Burst = 2000, 4000
	// This process's own watch of the nodes in protobuf, as the manager's
	// and every node component's: the apiserver encodes each change once.
	watcher := rest.CopyConfig(admin)
	watcher.ContentType = apiruntime.ContentTypeProtobuf
	cs := kubernetes.NewForConfigOrDie(watcher)

	start := time.Now()
	if err := createNodes(ctx, cs, nNodes, nUnits); err != nil {
		return err
	}
	fmt.Printf("created %d nodes in %s\n", nNodes, time.Since(start).Round(time.Millisecond))

	// Watch the nodes to see when every one carries its group label.
	labelled := atomic.Int64{}
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Core().V1().Nodes().Informer()
	seen := sync.Map{}
	count := func(obj any) {
		if n, ok := obj.(*corev1.Node); ok && n.Labels["sites"] != "" {
			if _, loaded := seen.LoadOrStore(n.Name, true); !loaded {
				labelled.Add(1)
			}
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: count, UpdateFunc: func(_, n any) { count(n) }}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	writes := &writeCounter{counts: map[string]int{}}
	mgrCfg := rest.CopyConfig(admin)
	mgrCfg.QPS, mgrCfg.Burst = managerQPS, int(2*managerQPS)
	mgrCfg.WrapTransport = writes.wrap
	mgr, err := manager.New(mgrCfg, manager.Options{MetricsAddr: "0", ProbeAddr: "0"})
	if err != nil {
		return err
	}
	mctx, mstop := context.WithCancel(ctx)
	defer mstop()
	go func() { _ = mgr.Start(mctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return fmt.Errorf("manager cache did not sync")
	}
	var peakHeap atomic.Uint64
	go sampleHeap(mctx, &peakHeap)

	c, err := client.New(admin, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return err
	}
	group := &sitev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: "sites"}, Spec: sitev1.NodeGroupSpec{AutoFindNodeKeys: []string{siteKey}}}
	cpu := cpuMeter{cp: cp}
	cpu.begin()
	start = time.Now()
	if err := c.Create(ctx, group); err != nil {
		return err
	}
	profiled := make(chan error, 1)
	if apiServerProfile != "" {
		go func() { profiled <- profileAPIServer(ctx, cs, apiServerProfile, apiServerProfileFor) }()
	} else {
		profiled <- nil
	}
	// The curve: how many nodes are labelled every 30 s, to see whether
	// the rate holds up as the run goes on.
	lastReport := time.Now()
	for labelled.Load() < int64(nNodes) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Since(lastReport) >= 30*time.Second {
			lastReport = time.Now()
			fmt.Printf("  %4.0fs: %d nodes labelled\n", time.Since(start).Seconds(), labelled.Load())
		}
	}
	labelsDone := time.Since(start)
	var unitList sitev1.NodeUnitList
	for {
		if err := c.List(ctx, &unitList); err != nil {
			return err
		}
		ready := 0
		for _, u := range unitList.Items {
			if u.Status.ReadyRate != "" {
				ready++
			}
		}
		if ready == nUnits {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	unitsDone := time.Since(start)
	cpuUsed := cpu.used()
	stopProfile()
	if err := writeHeapProfile(); err != nil {
		return err
	}
	if err := <-profiled; err != nil {
		return fmt.Errorf("kube-apiserver profile: %w", err)
	}
	// Let the last status writes land before counting the idle period.
	time.Sleep(2 * time.Second)
	convergeWrites, byKind := writes.snapshot()
	fmt.Printf("\nnodes %d, units %d, GOMAXPROCS %d, manager QPS %.0f\n", nNodes, nUnits, runtime.GOMAXPROCS(0), managerQPS)
	fmt.Printf("all %d nodes labelled        %s after the NodeGroup was created\n", nNodes, labelsDone.Round(time.Millisecond))
	fmt.Printf("all %d units with a status  %s\n", nUnits, unitsDone.Round(time.Millisecond))
	fmt.Printf("API writes until then        %d (%.2f per node)\n%s", convergeWrites, float64(convergeWrites)/float64(nNodes), byKind)
	fmt.Printf("CPU until then               %s\n", cpuUsed.per(convergeWrites))

	time.Sleep(idle)
	idleTotal, idleKinds := writes.snapshot()
	fmt.Printf("API writes in the next %s  %d\n", idle, idleTotal-convergeWrites)
	if idleTotal != convergeWrites {
		fmt.Print(idleKinds)
	}
	fmt.Printf("manager peak Go heap         %d MiB (in-process, sampled)\n", peakHeap.Load()>>20)
	if idleTotal != convergeWrites {
		return fmt.Errorf("%d writes while idle, want 0", idleTotal-convergeWrites)
	}
	return relabelOne(ctx, cs, nUnits)
}

// relabelOne moves one node to another site and counts the reconciles each
// controller ran until it carries its new unit: what one relabel costs,
// which must not grow with the cluster.
func relabelOne(ctx context.Context, cs kubernetes.Interface, nUnits int) error {
	before, err := reconciles()
	if err != nil {
		return err
	}
	to := fmt.Sprintf("s%03d", 1%nUnits)
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, siteKey, to)
	if _, err := cs.CoreV1().Nodes().Patch(ctx, "node-00000", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return err
	}
	want := sitev1.AutoUnitName("sites", []string{to})
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, "node-00000", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if n.Labels["sites"] == want {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Let the units' and the group's reconciles of it run out.
	time.Sleep(3 * time.Second)
	after, err := reconciles()
	if err != nil {
		return err
	}
	names := make([]string, 0, len(after))
	for c := range after {
		names = append(names, c)
	}
	sort.Strings(names)
	fmt.Printf("relabel of one node, reconciles until settled:")
	for _, c := range names {
		fmt.Printf(" %s %.0f", c, after[c]-before[c])
	}
	fmt.Println()
	return nil
}

// reconciles is controller-runtime's reconcile count of each controller.
func reconciles() (map[string]float64, error) {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out, nil
}

func createNodes(ctx context.Context, cs kubernetes.Interface, nNodes, nUnits int) error {
	work := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
					Name:   fmt.Sprintf("node-%05d", i),
					Labels: map[string]string{siteKey: fmt.Sprintf("s%03d", i%nUnits), corev1.LabelHostname: fmt.Sprintf("node-%05d", i)},
				}}
				if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < nNodes; i++ {
		select {
		case work <- i:
		case err := <-errs:
			close(work)
			wg.Wait()
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

// cpuMeter measures the CPU time the control plane's processes and this
// one (the manager) spend over a period: on a shared machine it shows which
// of them sets the pace, and whether one's cost per write grows with the
// cluster.
type cpuMeter struct {
	cp *controlplane.ControlPlane
	t0 map[string]float64
}

type cpuUse map[string]float64

func (m *cpuMeter) sample() map[string]float64 {
	out := map[string]float64{"manager (this process)": process.CPUSeconds(os.Getpid())}
	for _, c := range m.cp.Components() {
		out[c.Name] = process.CPUSeconds(c.PID)
	}
	return out
}

func (m *cpuMeter) begin() { m.t0 = m.sample() }

func (m *cpuMeter) used() cpuUse {
	now, out := m.sample(), cpuUse{}
	for k, v := range now {
		out[k] = v - m.t0[k]
	}
	return out
}

// per prints each process's CPU seconds and its milliseconds per write.
func (u cpuUse) per(writes int64) string {
	names := make([]string, 0, len(u))
	for k := range u {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		fmt.Fprintf(&b, "%s %.1fs (%.2f ms/write); ", k, u[k], 1000*u[k]/float64(max(writes, 1)))
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// writeHeapProfile writes the live heap, after a collection, to
// heapProfile if it is set.
func writeHeapProfile() error {
	if heapProfile == "" {
		return nil
	}
	f, err := os.Create(heapProfile)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// profileAPIServer writes kube-apiserver's CPU profile over the next d to
// path.
func profileAPIServer(ctx context.Context, cs kubernetes.Interface, path string, d time.Duration) error {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").
		Param("seconds", strconv.Itoa(int(d.Seconds()))).Timeout(d + time.Minute).DoRaw(ctx)
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}

func sampleHeap(ctx context.Context, peak *atomic.Uint64) {
	var ms runtime.MemStats
	for ctx.Err() == nil {
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc > peak.Load() {
			peak.Store(ms.HeapAlloc)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
