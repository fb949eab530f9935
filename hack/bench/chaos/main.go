// Command chaos drives a lab through faults while the cloud keeps writing,
// and checks what a node's components see through their hub:
//
//   - a lab of 2 sites × 3 nodes (kwok kubelets, one hub each), a Deployment
//     whose pods run on every node;
//   - an informer on ConfigMaps through one node's hub (as a kubelet or
//     kube-proxy watches through it), and cycles of one random fault each:
//     a node or a whole site partitioned and healed, a hub or a kwok
//     killed with SIGKILL (the lab restarts it, as systemd would);
//   - the cloud creates, updates and deletes ConfigMaps all the while.
//
// At the end every uplink is healed and the informer's store is compared
// with the apiserver: lost, extra or stale objects, events seen twice or out
// of order, pods restarted or recreated, processes the lab restarted.
//
//	go run ./hack/bench/chaos -cycles 30
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/gobuild"
	"github.com/sitegrid/sitegrid/internal/lab"
)

const namespace = "chaos"

func main() {
	cycles := flag.Int("cycles", 30, "Fault cycles.")
	writesPerCycle := flag.Int("writes", 22, "Cloud writes (ConfigMap create, update, delete) per cycle.")
	seed := flag.Uint64("seed", 1, "Seed of the fault and write sequence.")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *cycles, *writesPerCycle, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

type tally struct {
	mu                     sync.Mutex
	lastRV                 map[string]int64
	events, dup, reordered int
}

func (t *tally) see(obj any) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return
	}
	rv, _ := strconv.ParseInt(cm.ResourceVersion, 10, 64)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.events++
	switch last, seen := t.lastRV[cm.Name]; {
	case seen && rv == last:
		t.dup++
	case seen && rv < last:
		t.reordered++
	}
	t.lastRV[cm.Name] = rv
}

func run(ctx context.Context, cycles, writesPerCycle int, seed uint64) error {
	tmp, err := os.MkdirTemp("", "sitegrid-chaos-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, name := range []string{"sitegrid-manager", "sitegrid-hub"} {
		if out, err := gobuild.Command(ctx, filepath.Join(tmp, name), "./cmd/"+name).CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", name, err, out)
		}
	}
	port, err := controlplane.FreePort()
	if err != nil {
		return err
	}
	workdir := filepath.Join(tmp, "lab")
	labCtx, stopLab := context.WithCancel(ctx)
	ready := make(chan *lab.State, 1)
	done := make(chan error, 1)
	go func() {
		done <- lab.Up(labCtx, lab.UpOptions{
			Workdir: workdir, Sites: 2, NodesPerSite: 3, APIServerPort: port, NodeMonitorGracePeriod: 8 * time.Second,
			ManagerBinary: filepath.Join(tmp, "sitegrid-manager"), HubBinary: filepath.Join(tmp, "sitegrid-hub"),
			Out: os.Stderr, Ready: func(s *lab.State) { ready <- s },
		})
	}()
	defer func() { stopLab(); <-done }()
	var state *lab.State
	select {
	case state = <-ready:
	case err := <-done:
		return fmt.Errorf("lab: %w", err)
	}

	admin, err := clientset(state.Kubeconfig)
	if err != nil {
		return err
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	pods, err := startWorkload(ctx, admin)
	if err != nil {
		return err
	}
	watched := lab.NodeName(lab.SiteName(0), 0)
	viaHub, err := lab.ViaHubKubeconfig(ctx, workdir, watched)
	if err != nil {
		return err
	}
	edgeClient, err := clientset(viaHub)
	if err != nil {
		return err
	}
	t := &tally{lastRV: map[string]int64{}}
	factory := informers.NewSharedInformerFactoryWithOptions(edgeClient, 0, informers.WithNamespace(namespace))
	inf := factory.Core().V1().ConfigMaps().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    t.see,
		UpdateFunc: func(_, n any) { t.see(n) },
	}); err != nil {
		return err
	}
	infCtx, stopInf := context.WithCancel(ctx)
	defer stopInf()
	factory.Start(infCtx.Done())
	factory.WaitForCacheSync(infCtx.Done())

	startPIDs, err := nodePIDs(ctx, workdir)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	nodes := make([]string, 0, len(state.Sites))
	for _, site := range state.Sites {
		nodes = append(nodes, site.Nodes...)
	}
	faults := map[string]int{}
	writes, kills := 0, 0
	started := time.Now()
	for c := 0; c < cycles; c++ {
		fault := []string{"partition node", "partition site", "kill hub", "kill kwok"}[rng.IntN(4)]
		faults[fault]++
		node := nodes[rng.IntN(len(nodes))]
		switch fault {
		case "partition node":
			err = lab.Partition(ctx, workdir, []string{node}, io.Discard)
		case "partition site":
			err = lab.Partition(ctx, workdir, []string{lab.SiteName(rng.IntN(2))}, io.Discard)
		case "kill hub", "kill kwok":
			err = killNode(ctx, workdir, node, fault == "kill hub")
			kills++
		}
		if err != nil {
			return fmt.Errorf("cycle %d, %s: %w", c, fault, err)
		}
		n, err := cloudWrites(ctx, admin, rng, writesPerCycle)
		writes += n
		if err != nil {
			return fmt.Errorf("cycle %d, cloud writes: %w", c, err)
		}
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		if err := lab.Heal(ctx, workdir, nil, io.Discard); err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
	elapsed := time.Since(started)

	// Converged: the hub's informer equals the cloud, within a minute.
	var diff []string
	deadline := time.Now().Add(time.Minute)
	for {
		if diff, err = storeDiff(ctx, admin, inf.GetStore()); err != nil {
			return err
		}
		if len(diff) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	restartedPods, err := podRestarts(ctx, admin, pods)
	if err != nil {
		return err
	}
	endPIDs, err := nodePIDs(ctx, workdir)
	if err != nil {
		return err
	}
	restarted := 0
	for name, pid := range endPIDs {
		if startPIDs[name] != pid {
			restarted++
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Printf("| cycles | faults | cloud writes | SIGKILLs | distinct processes restarted by the lab | informer events | duplicated | reordered | final diff | pods restarted or recreated | time |\n")
	fmt.Printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	fmt.Printf("| %d | %s | %d | %d | %d | %d | %d | %d | %d | %d | %.0f s |\n", cycles, faultList(faults), writes, kills, restarted,
		t.events, t.dup, t.reordered, len(diff), restartedPods, elapsed.Seconds())
	for _, d := range diff {
		fmt.Println("diff:", d)
	}
	if len(diff) > 0 || t.dup > 0 || t.reordered > 0 || restartedPods > 0 {
		return errors.New("the hub's view diverged from the cloud's, or pods restarted")
	}
	return nil
}

func clientset(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	return kubernetes.NewForConfig(cfg)
}

// startWorkload runs a Deployment with a pod on every node and returns its
// pods' UIDs once all run.
func startWorkload(ctx context.Context, cs kubernetes.Interface) (map[string]bool, error) {
	labels := map[string]string{"app": "chaos"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "chaos", Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](6),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "app", Image: "sitegrid.local/echoserver:v1"}},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(namespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		list, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=chaos"})
		if err != nil {
			return nil, err
		}
		uids := map[string]bool{}
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning {
				uids[string(p.UID)] = true
			}
		}
		if len(uids) == 6 {
			return uids, nil
		}
		time.Sleep(time.Second)
	}
	return nil, errors.New("the workload's 6 pods did not run within 2 minutes")
}

// podRestarts counts the workload's pods that are not the ones that ran at
// the start, and container restarts.
func podRestarts(ctx context.Context, cs kubernetes.Interface, start map[string]bool) (int, error) {
	list, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=chaos"})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range list.Items {
		if !start[string(p.UID)] {
			n++
		}
		for _, s := range p.Status.ContainerStatuses {
			n += int(s.RestartCount)
		}
	}
	return n + max(0, len(start)-len(list.Items)), nil
}

// cloudWrites makes n writes to ConfigMaps of the namespace: creates,
// updates and deletes over a pool of 40 names.
func cloudWrites(ctx context.Context, cs kubernetes.Interface, rng *rand.Rand, n int) (int, error) {
	cms := cs.CoreV1().ConfigMaps(namespace)
	done := 0
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("cm-%02d", rng.IntN(40))
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": "0"}}, metav1.CreateOptions{})
		case err != nil:
		case rng.IntN(5) == 0:
			err = cms.Delete(ctx, name, metav1.DeleteOptions{})
		default:
			v, _ := strconv.Atoi(cm.Data["v"])
			cm.Data["v"] = strconv.Itoa(v + 1)
			_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		}
		if err != nil {
			return done, err
		}
		done++
	}
	return done, nil
}

// storeDiff compares the informer's store with the apiserver's list.
func storeDiff(ctx context.Context, cs kubernetes.Interface, store cache.Store) ([]string, error) {
	list, err := cs.CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	want := map[string]corev1.ConfigMap{}
	for _, cm := range list.Items {
		want[cm.Name] = cm
	}
	var diff []string
	got := map[string]bool{}
	for _, o := range store.List() {
		cm := o.(*corev1.ConfigMap)
		got[cm.Name] = true
		w, ok := want[cm.Name]
		switch {
		case !ok:
			diff = append(diff, cm.Name+": in the hub's view, deleted in the cloud")
		case w.ResourceVersion != cm.ResourceVersion || w.Data["v"] != cm.Data["v"]:
			diff = append(diff, fmt.Sprintf("%s: hub has v=%s (rv %s), cloud v=%s (rv %s)", cm.Name, cm.Data["v"], cm.ResourceVersion, w.Data["v"], w.ResourceVersion))
		}
	}
	for name := range want {
		if !got[name] {
			diff = append(diff, name+": in the cloud, missing from the hub's view")
		}
	}
	sort.Strings(diff)
	return diff, nil
}

func nodePIDs(ctx context.Context, workdir string) (map[string]int, error) {
	nodes, err := lab.EdgeNodes(ctx, workdir)
	if err != nil {
		return nil, err
	}
	pids := map[string]int{}
	for _, n := range nodes {
		pids["hub/"+n.Name], pids["kwok/"+n.Name] = n.HubPID, n.KubeletPID
	}
	return pids, nil
}

// killNode kills one node's hub or kwok with SIGKILL, as a crash would.
func killNode(ctx context.Context, workdir, node string, hub bool) error {
	nodes, err := lab.EdgeNodes(ctx, workdir)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.Name == node {
			pid := n.KubeletPID
			if hub {
				pid = n.HubPID
			}
			if pid <= 0 {
				return nil // being restarted right now
			}
			return syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return fmt.Errorf("no node %s", node)
}

func faultList(f map[string]int) string {
	parts := make([]string, 0, len(f))
	for _, k := range slices.Sorted(maps.Keys(f)) {
		parts = append(parts, fmt.Sprintf("%d× %s", f[k], k))
	}
	return strings.Join(parts, ", ")
}
