// Command grids measures the DeploymentGrid controller at scale against a
// real etcd and kube-apiserver: -grids grids over -units units make
// grids×units Deployments. In the same run a plain client first creates as
// many Deployments as fast as it can, the limit the controller is compared
// with. sitegrid-manager runs as its own process, so its API writes (from its
// client metrics) and its peak resident memory are its own.
//
//	go run ./hack/bench/grids -grids 50 -units 200 -idle 1m
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"maps"
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

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	"github.com/sitegrid/sitegrid/config"
	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/gobuild"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/manager"
	"github.com/sitegrid/sitegrid/internal/process"
)

var plainWorkers int

func main() {
	grids := flag.Int("grids", 50, "DeploymentGrids")
	units := flag.Int("units", 200, "unit values (one node each)")
	idle := flag.Duration("idle", time.Minute, "idle period after convergence in which the manager's writes are counted")
	qps := flag.Int("qps", 1000, "the manager's --kube-api-qps")
	flag.IntVar(&plainWorkers, "plain-workers", 32, "parallel creates of the plain client")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard()) // the numbers are the output
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *grids, *units, *idle, *qps); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, nGrids, nUnits int, idle time.Duration, qps int) error {
	bin, err := kubebin.Ensure(ctx, kubebin.Options{Progress: os.Stderr})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "sitegrid-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	managerBin := filepath.Join(dir, "sitegrid-manager")
	if out, err := gobuild.Command(ctx, managerBin, "./cmd/sitegrid-manager").CombinedOutput(); err != nil {
		return fmt.Errorf("build manager: %v\n%s", err, out)
	}
	cp, err := controlplane.Start(ctx, controlplane.Config{Dir: filepath.Join(dir, "cp"), Bin: bin, APIServerOnly: true})
	if err != nil {
		return err
	}
	defer cp.Stop()
	if err := lab.InstallManifests(ctx, cp.RESTConfig(), config.Manifests); err != nil {
		return err
	}
	admin := cp.RESTConfig()
	admin.QPS, admin.Burst = -1, 0 // no client-side limit: "as fast as it can"
	cs := kubernetes.NewForConfigOrDie(admin)
	for _, ns := range []string{"baseline", "grids"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	for u := 0; u < nUnits; u++ {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%03d", u), Labels: map[string]string{"site": fmt.Sprintf("u%03d", u)}}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	total := nGrids * nUnits
	fmt.Printf("%d grids x %d units = %d Deployments\n", nGrids, nUnits, total)

	// The limit: a plain client writing the same Deployments, 32 workers, no
	// rate limit.
	var apiPID, etcdPID int
	for _, comp := range cp.Components() {
		switch comp.Name {
		case controlplane.KubeAPIServer:
			apiPID = comp.PID
		case controlplane.Etcd:
			etcdPID = comp.PID
		}
	}
	// The plain client is the manager as a client: its identity (RBAC and
	// owner-reference checks cost the apiserver the same) and its wire
	// encoding (protobuf, as controller-runtime's for built-in types).
	kc, err := cp.WriteKubeconfig("sitegrid-manager", lab.ManagerIdentity, "system:serviceaccounts", "system:serviceaccounts:sitegrid-system")
	if err != nil {
		return err
	}
	plainCfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return err
	}
	plainCfg.QPS, plainCfg.Burst = -1, 0
	plainCfg.ContentType = runtime.ContentTypeProtobuf
	plainAPICPU := process.CPUSeconds(apiPID)
	start := time.Now()
	if err := createPlain(ctx, kubernetes.NewForConfigOrDie(plainCfg), total, nUnits); err != nil {
		return err
	}
	plain := time.Since(start)
	fmt.Printf("plain client created %d Deployments in %s (%.0f/s), kube-apiserver CPU %.1fs\n", total, plain.Round(time.Millisecond), float64(total)/plain.Seconds(), process.CPUSeconds(apiPID)-plainAPICPU)
	if err := cs.AppsV1().Deployments("baseline").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		return err
	}

	mgr, metricsURL, err := startManager(kc, managerBin, dir, qps)
	if err != nil {
		return err
	}
	defer mgr.Stop(30 * time.Second)
	wc, err := client.NewWithWatch(admin, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return err
	}
	c := client.Client(wc)
	before, err := writes(ctx, metricsURL)
	if err != nil {
		return err
	}
	served0, err := apiRequests(ctx, cs)
	if err != nil {
		return err
	}
	mgrCPU0, apiCPU0, etcdCPU0 := process.CPUSeconds(mgr.PID()), process.CPUSeconds(apiPID), process.CPUSeconds(etcdPID)
	start = time.Now()
	for g := 0; g < nGrids; g++ {
		if err := c.Create(ctx, grid(fmt.Sprintf("app-%02d", g))); err != nil {
			return err
		}
	}
	// Converged: every child exists and every grid's status counts them.
	// Watched, not polled, so measuring adds no load.
	if err := waitConverged(ctx, wc, nGrids, nUnits); err != nil {
		return err
	}
	converge := time.Since(start)
	children, err := cs.AppsV1().Deployments("grids").List(ctx, metav1.ListOptions{LabelSelector: gridv1.LabelGridSelector})
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	after, err := writes(ctx, metricsURL)
	if err != nil {
		return err
	}
	fmt.Printf("grids converged in %s: %d Deployments (%.2fx the plain client)\n", converge.Round(time.Millisecond), len(children.Items), converge.Seconds()/plain.Seconds())
	fmt.Printf("manager API writes until then: %d\n", after-before)
	fmt.Printf("CPU used until then: manager %.1fs, kube-apiserver %.1fs, etcd %.1fs\n", process.CPUSeconds(mgr.PID())-mgrCPU0, process.CPUSeconds(apiPID)-apiCPU0, process.CPUSeconds(etcdPID)-etcdCPU0)
	served, err := apiRequests(ctx, cs)
	if err != nil {
		return err
	}
	fmt.Println("requests kube-apiserver served until then (from all clients, 10 or more):")
	for _, k := range slices.Sorted(maps.Keys(served)) {
		if n := served[k] - served0[k]; n >= 10 {
			fmt.Printf("    %-50s %.0f\n", k, n)
		}
	}
	time.Sleep(idle)
	idleWrites, err := writes(ctx, metricsURL)
	if err != nil {
		return err
	}
	fmt.Printf("manager API writes in the next %s: %d\n", idle, idleWrites-after)
	fmt.Printf("manager peak resident memory: %d MiB\n", peakRSS(mgr.PID())>>20)
	if len(children.Items) != total {
		return fmt.Errorf("%d Deployments, want %d", len(children.Items), total)
	}
	if idleWrites != after {
		return fmt.Errorf("%d writes while idle, want 0", idleWrites-after)
	}
	return nil
}

func deploymentSpec(app string) appsv1.DeploymentSpec {
	l := map[string]string{"app": app}
	return appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](1),
		Selector: &metav1.LabelSelector{MatchLabels: l},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: l},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/" + app + ":1"}}},
		},
	}
}

func grid(name string) *gridv1.DeploymentGrid {
	s := deploymentSpec(name)
	return &gridv1.DeploymentGrid{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "grids"},
		Spec: gridv1.DeploymentGridSpec{GridUniqKey: "site", Template: &s}}
}

// sameAsChild is the Deployment the grid controller makes for a unit, byte
// for byte in shape: the pinned spec, the grid's labels and annotations, and
// an owner reference, so the plain client writes the same objects.
func sameAsChild(app, unit string) *appsv1.Deployment {
	spec := deploymentSpec(app)
	spec.Template.Spec.NodeSelector = map[string]string{"site": unit}
	for _, l := range []map[string]string{spec.Selector.MatchLabels, spec.Template.Labels} {
		l[gridv1.LabelGridSelector] = app
		l[gridv1.LabelGridUnit] = unit
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name: app + "-" + unit, Namespace: "baseline",
			Labels: map[string]string{gridv1.LabelGridSelector: app, gridv1.LabelGridUniqKey: "site", gridv1.LabelGridUnit: unit},
			Annotations: map[string]string{
				gridv1.AnnotationTemplateHash: "0123456789abcdef",
				gridv1.AnnotationUpdatedAt:    time.Now().UTC().Format(time.RFC3339),
			},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: gridv1.GroupVersion.String(), Kind: "DeploymentGrid", Name: app,
				UID: types.UID("00000000-0000-0000-0000-0000000000" + app[len(app)-2:]), Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Spec: spec,
	}
}

func createPlain(ctx context.Context, cs kubernetes.Interface, total, nUnits int) error {
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < plainWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				d := sameAsChild(fmt.Sprintf("app-%02d", i/nUnits), fmt.Sprintf("u%03d", i%nUnits))
				if _, err := cs.AppsV1().Deployments("baseline").Create(ctx, d, metav1.CreateOptions{}); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < total; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	return firstErr
}

func startManager(kc, path, dir string, qps int) (*process.Process, string, error) {
	port, err := controlplane.FreePort()
	if err != nil {
		return nil, "", err
	}
	probePort, err := controlplane.FreePort()
	if err != nil {
		return nil, "", err
	}
	p, err := process.Start(process.Spec{Name: "sitegrid-manager", Path: path, LogFile: filepath.Join(dir, "manager.log"), Args: []string{
		"--kubeconfig=" + kc, "--leader-elect=false", "--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(probePort),
		"--metrics-secure=false", "--metrics-bind-address=127.0.0.1:" + strconv.Itoa(port),
		"--kube-api-qps=" + strconv.Itoa(qps), "--kube-api-burst=" + strconv.Itoa(2*qps),
	}})
	if err != nil {
		return nil, "", err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Ready: its caches have synced (the nodes of every unit), so the
	// grids meet a running manager, not one starting up.
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort)
	if err := p.WaitReady(ctx, 200*time.Millisecond, func(ctx context.Context) error {
		if _, err := writes(ctx, url); err != nil {
			return err
		}
		return ready(ctx, readyz)
	}); err != nil {
		p.Stop(5 * time.Second)
		return nil, "", err
	}
	return p, url, nil
}

// apiRequests is kube-apiserver's count of requests served, by verb,
// resource and subresource (apiserver_request_total).
func apiRequests(ctx context.Context, cs kubernetes.Interface) (map[string]float64, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(line[len("apiserver_request_total{"):strings.LastIndexByte(line, '}')], ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				labels[k] = strings.Trim(v, `"`)
			}
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return nil, err
		}
		key := labels["verb"] + " " + labels["resource"]
		if sub := labels["subresource"]; sub != "" {
			key += "/" + sub
		}
		out[key] += v
	}
	return out, nil
}

// ready is nil once url answers 200.
func ready(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

// writes sums the manager's non-GET requests from client-go's metrics.
func writes(ctx context.Context, url string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var total int64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "rest_client_requests_total{") || strings.Contains(line, `method="GET"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, err
		}
		total += int64(v)
	}
	return total, sc.Err()
}

// peakRSS is a process's peak resident set (VmHWM) in bytes.
func peakRSS(pid int) int64 {
	st, _ := process.Status(pid)
	return st["VmHWM"]
}

// waitConverged watches the grids until every one counts all its units.
func waitConverged(ctx context.Context, wc client.WithWatch, nGrids, nUnits int) error {
	w, err := wc.Watch(ctx, &gridv1.DeploymentGridList{}, client.InNamespace("grids"))
	if err != nil {
		return err
	}
	defer w.Stop()
	done := map[string]bool{}
	for ev := range w.ResultChan() {
		g, ok := ev.Object.(*gridv1.DeploymentGrid)
		if !ok {
			continue
		}
		if int(g.Status.Units) == nUnits && g.Status.ObservedGeneration == g.Generation {
			done[g.Name] = true
		}
		if len(done) == nGrids {
			return nil
		}
	}
	return fmt.Errorf("watch ended before the grids converged: %v", ctx.Err())
}
