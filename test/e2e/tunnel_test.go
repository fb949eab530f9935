package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/lab/images"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

const tunnelNS = "default"

// TestTunnelRealNodes: the lab's apiserver dials nodes by name, which
// resolves nowhere on the host, through its egress selector to
// sitegrid-tunnel; each real node's hub holds the node's tunnel session.
// kubectl logs and logs -f, exec (a command, an interactive shell, and
// 100 MB of output that arrives whole), attach, port-forward carrying
// an HTTP request, and kubectl top (metrics-server scraping through the
// tunnel) all work; a logs -f whose reader reads nothing for 30 s
// delays no exec on the same node; partitioned, the node's streams fail
// with a clear error, and after heal they work again; SIGKILL of the tunnel
// replica holding the node's session, and they work through the other.
func TestTunnelRealNodes(t *testing.T) {
	testenv.Binaries(t)
	if why := lab.RealNodesAvailable(); why != nil {
		t.Skipf("real nodes cannot run here (%v); CI runs this test as root", why)
	}
	l := upLab(t, "--sites", "2", "--nodes-per-site", "1", "--real-nodes", "--metrics-server", "--tunnel-replicas", "2", "--node-monitor-grace-period", "8s")
	kubeconfig, admin, c := l.clients()
	ctx := context.Background()
	node := lab.NodeName("site-1", 0)
	kubectl := func(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, testenv.Binaries(t).Path(kubebin.Kubectl), append([]string{"--kubeconfig", kubeconfig, "-n", tunnelNS}, args...)...)
		cmd.Stdin = stdin
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := kubectl(ctx, nil, args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	pod := func(name string, ctr corev1.Container) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tunnelNS},
			Spec: corev1.PodSpec{NodeName: node, RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{ctr},
				Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}, TerminationGracePeriodSeconds: ptr.To[int64](1)}}
	}
	createAll(t, c,
		// Counts, a line every 100 ms, after a greeting.
		pod("talker", corev1.Container{Name: "talker", Image: images.Busybox,
			Command: []string{"/bin/sh", "-c", "echo hello from the edge; i=0; while true; do i=$((i+1)); echo line $i; usleep 100000; done"}}),
		// Floods its log (about 2 MB/s) for the stalled logs -f reader.
		pod("flood", corev1.Container{Name: "flood", Image: images.Busybox,
			Command: []string{"/bin/sh", "-c", "while true; do head -c 20000 /dev/zero | tr '\\0' x; echo; usleep 10000; done"}}),
		pod("attach", corev1.Container{Name: "cat", Image: images.Busybox, Command: []string{"/bin/cat"}, Stdin: true, StdinOnce: true}),
		pod("web", corev1.Container{Name: "web", Image: images.Echoserver, Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
			Env: []corev1.EnvVar{{Name: "NODE_NAME", Value: node}}}),
	)
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) error {
		for _, name := range []string{"talker", "flood", "attach", "web"} {
			p, err := admin.CoreV1().Pods(tunnelNS).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != corev1.PodRunning {
				return fmt.Errorf("pod %s is %s", name, p.Status.Phase)
			}
		}
		return nil
	})
	if st := edgeNode(t, l.workdir, node); !strings.HasPrefix(st.Tunnel, "sitegrid-tunnel-") {
		t.Errorf("lab status: %s's tunnel is %q, want held by a replica", node, st.Tunnel)
	}

	// logs, logs -f
	if out := must("logs", "talker"); !strings.Contains(out, "hello from the edge") {
		t.Errorf("kubectl logs: %q", out)
	}
	fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	out, _ := kubectl(fctx, nil, "logs", "-f", "talker")
	cancel()
	if n := strings.Count(out, "line "); n < 5 {
		t.Errorf("kubectl logs -f gave %d new lines in 3 s, want at least 5:\n%s", n, out)
	}

	// exec: a command, an interactive shell, and 100 MB of output
	if out := must("exec", "talker", "--", "cat", "/proc/1/cmdline"); !strings.Contains(out, "hello from the edge") {
		t.Errorf("kubectl exec: %q", out)
	}
	if out, err := kubectl(ctx, strings.NewReader("echo $((6*7))\nexit\n"), "exec", "-i", "talker", "--", "sh"); err != nil || strings.TrimSpace(out) != "42" {
		t.Errorf("kubectl exec -i sh: %v %q", err, out)
	}
	const big = 100 << 20
	start := time.Now()
	bigOut := exec.Command(testenv.Binaries(t).Path(kubebin.Kubectl), "--kubeconfig", kubeconfig, "-n", tunnelNS, "exec", "talker", "--", "head", "-c", fmt.Sprint(big), "/dev/zero")
	var stdout bytes.Buffer
	bigOut.Stdout = &stdout
	if err := bigOut.Run(); err != nil || stdout.Len() != big {
		t.Errorf("kubectl exec of 100 MB: %v, %d bytes arrived, want %d", err, stdout.Len(), big)
	}
	t.Logf("100 MB through kubectl exec and the tunnel: %s", time.Since(start).Round(10*time.Millisecond))

	// attach
	if out, err := kubectl(ctx, strings.NewReader("through the tunnel\n"), "attach", "-i", "attach", "-c", "cat"); err != nil || !strings.Contains(out, "through the tunnel") {
		t.Errorf("kubectl attach -i: %v %q", err, out)
	}

	// port-forward carrying an HTTP request
	portForward(t, testenv.Binaries(t).Path(kubebin.Kubectl), kubeconfig, node)

	// top: metrics-server scrapes the kubelets through the tunnel (its
	// HTTPS proxy), and the apiserver reaches metrics-server through it.
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) error {
		out, err := kubectl(ctx, nil, "top", "pod", "talker", "--no-headers")
		if err != nil || !strings.HasPrefix(out, "talker ") {
			return fmt.Errorf("kubectl top pod talker: %v %s", err, out)
		}
		if out, err = kubectl(ctx, nil, "top", "node", node, "--no-headers"); err != nil || !strings.HasPrefix(out, node+" ") {
			return fmt.Errorf("kubectl top node %s: %v %s", node, err, out)
		}
		return nil
	})

	// A logs -f reader that reads nothing for 30 s delays no exec.
	stalled := exec.Command(testenv.Binaries(t).Path(kubebin.Kubectl), "--kubeconfig", kubeconfig, "-n", tunnelNS, "logs", "-f", "flood")
	pipe, err := stalled.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := stalled.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stalled.Process.Kill(); _ = stalled.Wait() }()
	// Read a first line, so the stream is flowing, then nothing.
	if _, err := bufio.NewReader(pipe).ReadString('\n'); err != nil {
		t.Fatalf("logs -f flood: %v", err)
	}
	stallEnds := time.Now().Add(30 * time.Second)
	execs := 0
	for time.Now().Before(stallEnds) {
		ectx, cancel := context.WithTimeout(ctx, 20*time.Second)
		out, err := kubectl(ectx, nil, "exec", "talker", "--", "echo", "not delayed")
		cancel()
		if err != nil || strings.TrimSpace(out) != "not delayed" {
			t.Fatalf("exec %d while a logs -f reader stalls: %v %q", execs, err, out)
		}
		execs++
	}
	if err := stalled.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the stalled logs -f ended while stalled: %v", err)
	}
	t.Logf("%d execs completed on %s while a logs -f reader read nothing for 30 s", execs, node)

	// Partitioned: a clear error. Healed: working again within seconds.
	l.must("lab", "partition", node)
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		out, err := kubectl(ctx, nil, "logs", "talker", "--tail", "1")
		if err == nil {
			return fmt.Errorf("kubectl logs still answered while partitioned")
		}
		if !strings.Contains(out, "not connected to the tunnel") {
			return fmt.Errorf("kubectl logs while partitioned: %s", out)
		}
		return nil
	})
	l.must("lab", "heal")
	healed := time.Now()
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		out, err := kubectl(ctx, nil, "exec", "talker", "--", "echo", "back")
		if err != nil || strings.TrimSpace(out) != "back" {
			return fmt.Errorf("after heal: %v %s", err, out)
		}
		return nil
	})
	t.Logf("exec works again %s after heal", time.Since(healed).Round(100*time.Millisecond))

	// SIGKILL of the replica holding the node's session: it reconnects to
	// the other, and exec works again.
	var holder string
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		if holder = edgeNode(t, l.workdir, node).Tunnel; !strings.HasPrefix(holder, "sitegrid-tunnel-") {
			return fmt.Errorf("%s's tunnel is %q", node, holder)
		}
		return nil
	})
	survivor := lab.TunnelReplicaName(0)
	if holder == survivor {
		survivor = lab.TunnelReplicaName(1)
	}
	killed := killReplica(t, l.workdir, holder)
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		if h := edgeNode(t, l.workdir, node).Tunnel; h != survivor {
			return fmt.Errorf("%s's tunnel is %q, want %s", node, h, survivor)
		}
		out, err := kubectl(ctx, nil, "exec", "talker", "--", "echo", "back")
		if err != nil || strings.TrimSpace(out) != "back" {
			return fmt.Errorf("after SIGKILL of %s: %v %s", holder, err, out)
		}
		return nil
	})
	t.Logf("exec works again through %s %s after SIGKILL of %s", survivor, time.Since(killed).Round(100*time.Millisecond), holder)
}

// killReplica SIGKILLs the lab's tunnel replica name and says when.
func killReplica(t *testing.T, workdir, name string) time.Time {
	t.Helper()
	pid := labPIDs(t, workdir)[name]
	if pid == 0 {
		t.Fatalf("lab state has no %s", name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

var forwarding = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)

func portForward(t *testing.T, kubectlBin, kubeconfig, node string) {
	t.Helper()
	cmd := exec.Command(kubectlBin, "--kubeconfig", kubeconfig, "-n", tunnelNS, "port-forward", "pod/web", ":8080")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	m := forwarding.FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("kubectl port-forward: %v %q", err, line)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://127.0.0.1:" + m[1] + "/")
	if err != nil {
		t.Fatalf("HTTP through kubectl port-forward: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := answeredBy.FindStringSubmatch(string(body)); got == nil || got[1] != node {
		t.Errorf("port-forward answered by %v, want the pod on %s:\n%s", got, node, body)
	}
}

// TestTunnelKwokNodes: kwok nodes are tunnelled too: each one's kwok serves
// the kubelet API over HTTPS only to its hub's agent, and the apiserver
// reaches it by name through sitegrid-tunnel: logs, exec (100 MB whole, and
// interactive), attach, port-forward (to the node's hub's health port) work;
// partitioned, a clear error; healed, working again. Two tunnel replicas,
// each holding one node's session: the replica the apiserver reaches
// forwards to the other; SIGKILL of it, and every node is reachable again
// through the other.
func TestTunnelKwokNodes(t *testing.T) {
	l := upLab(t, "--sites", "2", "--nodes-per-site", "1", "--tunnel-replicas", "2")
	kubeconfig, admin, c := l.clients()
	ctx := context.Background()
	node := lab.NodeName("site-2", 0)
	kubectlBin := testenv.Binaries(t).Path(kubebin.Kubectl)
	kubectl := func(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, kubectlBin, append([]string{"--kubeconfig", kubeconfig, "-n", tunnelNS}, args...)...)
		cmd.Stdin = stdin
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// A pod on each node: "sim" on node, "sim-other" on the other.
	other := lab.NodeName("site-1", 0)
	pods := map[string]string{node: "sim", other: "sim-other"}
	for n, name := range pods {
		createAll(t, c, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tunnelNS},
			Spec: corev1.PodSpec{NodeName: n, Containers: []corev1.Container{{Name: "sim", Image: "simulated"}},
				Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}}})
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		for _, name := range pods {
			p, err := admin.CoreV1().Pods(tunnelNS).Get(ctx, name, metav1.GetOptions{})
			if err != nil || p.Status.Phase != corev1.PodRunning {
				return fmt.Errorf("pod %s not running: %v", name, err)
			}
		}
		return nil
	})
	// Each node's hub starts from a replica of its own.
	holders := map[string]string{}
	for n := range pods {
		holders[n] = edgeNode(t, l.workdir, n).Tunnel
	}
	if holders[node] == holders[other] || !strings.HasPrefix(holders[node], "sitegrid-tunnel-") || !strings.HasPrefix(holders[other], "sitegrid-tunnel-") {
		t.Errorf("lab status: tunnels %v, want each node held by a replica of its own", holders)
	}
	if out, err := kubectl(ctx, nil, "logs", "sim"); err != nil || !strings.Contains(out, "simulated container on "+node) {
		t.Errorf("kubectl logs: %v %q", err, out)
	}
	if out, err := kubectl(ctx, nil, "exec", "sim", "--", "echo", "through the tunnel"); err != nil || strings.TrimSpace(out) != "through the tunnel" {
		t.Errorf("kubectl exec: %v %q", err, out)
	}
	// (Interactive exec is the real nodes' test: kwok keeps an exec's
	// stream open after its command ends when stdin is attached.)
	const big = 100 << 20
	bctx, bcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer bcancel()
	bigOut := exec.CommandContext(bctx, kubectlBin, "--kubeconfig", kubeconfig, "-n", tunnelNS, "exec", "sim", "--", "head", "-c", fmt.Sprint(big), "/dev/zero")
	var stdout bytes.Buffer
	bigOut.Stdout = &stdout
	if err := bigOut.Run(); err != nil || stdout.Len() != big {
		t.Errorf("kubectl exec of 100 MB: %v, %d bytes arrived, want %d", err, stdout.Len(), big)
	}
	// attach follows the container's output from now on: a line the
	// container writes while attached arrives.
	actx, cancel := context.WithTimeout(ctx, 8*time.Second)
	attached := make(chan string, 1)
	go func() {
		out, _ := kubectl(actx, nil, "attach", "sim")
		attached <- out
	}()
	time.Sleep(3 * time.Second)
	logFile := filepath.Join(l.workdir, "controlplane", "nodes", node, "kwok-pod.log")
	f, err := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "%s stdout F written while attached\n", time.Now().UTC().Format(time.RFC3339Nano))
	f.Close()
	out := <-attached
	cancel()
	if !strings.Contains(out, "written while attached") {
		t.Errorf("kubectl attach: %q", out)
	}
	pf := exec.Command(kubectlBin, "--kubeconfig", kubeconfig, "-n", tunnelNS, "port-forward", "pod/sim", ":8080")
	pfOut, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(pfOut).ReadString('\n')
	if m := forwarding.FindStringSubmatch(line); m == nil {
		t.Errorf("kubectl port-forward: %q", line)
	} else if body := httpGet(t, "http://127.0.0.1:"+m[1]+"/healthz"); body != "ok" {
		t.Errorf("GET /healthz through port-forward: %q", body)
	}
	_ = pf.Process.Kill()
	_ = pf.Wait()

	l.must("lab", "partition", node)
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		out, err := kubectl(ctx, nil, "logs", "sim")
		if err == nil || !strings.Contains(out, "node "+node+" is not connected to the tunnel") {
			return fmt.Errorf("kubectl logs while partitioned: %v %s", err, out)
		}
		// The apiserver dials the node by its name, so the tunnel needs no
		// unique address to find it.
		if !strings.Contains(out, "while dialing "+node+":") {
			t.Errorf("the apiserver did not dial %s by name: %s", node, out)
		}
		return nil
	})
	l.must("lab", "heal")
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		out, err := kubectl(ctx, nil, "exec", "sim", "--", "echo", "back")
		if err != nil || strings.TrimSpace(out) != "back" {
			return fmt.Errorf("after heal: %v %s", err, out)
		}
		return nil
	})

	// Both nodes answer, whichever replica holds them: the apiserver
	// reaches the first live replica, which forwards to the holder.
	execAll := func(ctx context.Context) error {
		for n, name := range pods {
			if out, err := kubectl(ctx, nil, "exec", name, "--", "echo", n); err != nil || strings.TrimSpace(out) != n {
				return fmt.Errorf("exec on %s: %v %s", n, err, out)
			}
		}
		return nil
	}
	testenv.Eventually(t, 30*time.Second, execAll)
	// SIGKILL of the replica the apiserver reaches (which may hold
	// sessions too): the other takes the apiserver's CONNECTs and every
	// session.
	first, second := lab.TunnelReplicaName(0), lab.TunnelReplicaName(1)
	killed := killReplica(t, l.workdir, first)
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		for n := range pods {
			if h := edgeNode(t, l.workdir, n).Tunnel; h != second {
				return fmt.Errorf("%s's tunnel is %q, want %s", n, h, second)
			}
		}
		return execAll(ctx)
	})
	t.Logf("every node reachable through %s %s after SIGKILL of %s", second, time.Since(killed).Round(100*time.Millisecond), first)
}
