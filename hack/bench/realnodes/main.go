// Command realnodes measures the lab's real nodes (root): a lab of one site
// of -nodes real nodes (containerd, kubelet, kube-proxy and hub each) with
// two echo pods per node, and reports
//
//   - lab start to every node Ready, and one more node (`lab add-node
//     --real`) to Ready;
//
//   - each node's resident memory and CPU while idle: every process in its
//     network namespace or cgroups (kubelet, containerd, shims, kube-proxy,
//     containers) plus its hub;
//
//   - a reboot of one node, online, and of the whole site while
//     partitioned, to every pod of the rebooted nodes answering again at
//     its address.
//
//     sudo go run ./hack/bench/realnodes -nodes 4
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/lab/images"
	"github.com/sitegrid/sitegrid/internal/lab/machine"
	"github.com/sitegrid/sitegrid/internal/lab/netns"
	"github.com/sitegrid/sitegrid/internal/process"
)

func main() {
	nodes := flag.Int("nodes", 3, "real nodes in the site (one more is added)")
	idle := flag.Duration("idle", 30*time.Second, "how long the CPU of idle nodes is sampled")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *nodes, *idle); err != nil {
		fmt.Fprintln(os.Stderr, "realnodes:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, n int, idle time.Duration) error {
	if err := lab.RealNodesAvailable(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "sg-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	workdir := filepath.Join(tmp, "lab")
	port, err := controlplane.FreePort()
	if err != nil {
		return err
	}
	labCtx, stopLab := context.WithCancel(ctx)
	ready := make(chan *lab.State, 1)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- lab.Up(labCtx, lab.UpOptions{Workdir: workdir, Sites: 1, NodesPerSite: n, APIServerPort: port, RealNodes: true,
			NodeMonitorGracePeriod: 8 * time.Second, Out: os.Stderr, Ready: func(s *lab.State) { ready <- s }})
	}()
	var state *lab.State
	select {
	case state = <-ready:
	case err := <-done:
		stopLab()
		return fmt.Errorf("lab: %w", err)
	}
	defer func() { stopLab(); <-done }()
	fmt.Printf("lab up, %d real nodes Ready (control plane included): %s\n", n, time.Since(start).Round(100*time.Millisecond))
	added := time.Now()
	extra := lab.NodeName("site-1", n)
	if err := lab.AddNode(ctx, workdir, extra, map[string]string{lab.SiteLabel: "site-1"}, true, io.Discard); err != nil {
		return err
	}
	fmt.Printf("lab add-node --real to Ready: %s\n", time.Since(added).Round(100*time.Millisecond))
	n++

	cfg, err := clientcmd.BuildConfigFromFlags("", state.Kubeconfig)
	if err != nil {
		return err
	}
	admin, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := startEcho(ctx, admin, int32(2*n)); err != nil {
		return err
	}
	pods, err := waitEcho(ctx, admin, 2*n)
	if err != nil {
		return err
	}

	// Idle: memory and CPU per node.
	status, err := lab.EdgeNodes(ctx, workdir)
	if err != nil {
		return err
	}
	time.Sleep(10 * time.Second)
	before := map[string]float64{}
	for _, s := range status {
		_, cpu, err := usage(workdir, s)
		if err != nil {
			return err
		}
		before[s.Name] = cpu
	}
	time.Sleep(idle)
	fmt.Printf("idle, 2 echo pods per node (resident memory; CPU over %s):\n", idle)
	var totalRSS, totalCPU float64
	for _, s := range status {
		rss, cpu, err := usage(workdir, s)
		if err != nil {
			return err
		}
		share := (cpu - before[s.Name]) / idle.Seconds() * 100
		totalRSS += rss
		totalCPU += share
		fmt.Printf("  %s: %.0f MiB, %.1f %% of a core\n", s.Name, rss/(1<<20), share)
	}
	fmt.Printf("  mean per node: %.0f MiB, %.1f %% of a core\n", totalRSS/float64(len(status))/(1<<20), totalCPU/float64(len(status)))

	// Reboots: one node online, the whole site offline.
	target := lab.NodeName("site-1", 0)
	took, err := rebootUntilServing(ctx, workdir, []string{target}, pods, target)
	if err != nil {
		return err
	}
	fmt.Printf("reboot of %s, online, to its pods answering: %s\n", target, took.Round(100*time.Millisecond))
	if err := lab.Partition(ctx, workdir, []string{"site-1"}, io.Discard); err != nil {
		return err
	}
	time.Sleep(5 * time.Second) // the hubs notice
	took, err = rebootUntilServing(ctx, workdir, []string{"site-1"}, pods, "")
	if err != nil {
		return err
	}
	fmt.Printf("reboot of all %d nodes, offline, to every pod answering: %s\n", n, took.Round(100*time.Millisecond))
	return nil
}

// usage is a node's resident memory (bytes) and CPU time (seconds so far):
// its namespace's and cgroups' processes and its hub.
func usage(workdir string, s lab.NodeStatus) (rss, cpu float64, err error) {
	pids, err := machine.Processes(netns.Path(s.Netns), machine.CgroupRoot(workdir, s.Name))
	if err != nil {
		return 0, 0, err
	}
	pids = append(pids, s.HubPID)
	for _, pid := range pids {
		if st, err := process.Status(pid); err == nil {
			rss += float64(st["VmRSS"])
		}
		cpu += process.CPUSeconds(pid)
	}
	return rss, cpu, nil
}

func startEcho(ctx context.Context, cs kubernetes.Interface, replicas int32) error {
	labels := map[string]string{"app": "echo"}
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "echo", Image: images.Echoserver,
				Env: []corev1.EnvVar{field("NODE_NAME", "spec.nodeName"), field("POD_NAME", "metadata.name"), field("POD_NAMESPACE", "metadata.namespace"), field("POD_IP", "status.podIP")}}},
			TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
				WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
		}},
	}}
	_, err := cs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{})
	return err
}

// waitEcho waits for want ready echo pods and returns node → pod IPs.
func waitEcho(ctx context.Context, cs kubernetes.Interface, want int) (map[string][]string, error) {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		list, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
		if err != nil {
			return nil, err
		}
		out, ready := map[string][]string{}, 0
		for _, p := range list.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ready++
					out[p.Spec.NodeName] = append(out[p.Spec.NodeName], p.Status.PodIP)
				}
			}
		}
		if ready == want {
			return out, nil
		}
		time.Sleep(time.Second)
	}
	return nil, fmt.Errorf("fewer than %d echo pods ready after 3 minutes", want)
}

// rebootUntilServing reboots targets and times until every pod of the
// rebooted nodes (of only, when set) answers at its address from its node.
func rebootUntilServing(ctx context.Context, workdir string, targets []string, pods map[string][]string, only string) (time.Duration, error) {
	start := time.Now()
	if err := lab.Reboot(ctx, workdir, targets, io.Discard); err != nil {
		return 0, err
	}
	for node, ips := range pods {
		if only != "" && node != only {
			continue
		}
		for _, ip := range ips {
			for {
				if time.Since(start) > 3*time.Minute {
					return 0, fmt.Errorf("pod %s on %s does not answer 3 minutes after the reboot", ip, node)
				}
				wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err := lab.Exec(wctx, workdir, node, []string{images.BusyboxPath, "wget", "-q", "-O", "/dev/null", "http://" + ip + ":8080/"}, nil, io.Discard, io.Discard)
				cancel()
				if err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	return time.Since(start), nil
}
