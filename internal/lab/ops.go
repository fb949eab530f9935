package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/process"
)

// Detach starts `sitegridctl lab up` with args as a background process that
// outlives this one, streams its progress to out, and returns once the lab
// is ready. If the lab fails to start, its error is returned and nothing is
// left running.
func Detach(ctx context.Context, workdir string, args []string, out io.Writer) error {
	if err := os.MkdirAll(workdir, 0o700); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// A lab already running there keeps its log: refuse before touching it.
	unlock, err := lockWorkdir(workdir)
	if err != nil {
		return err
	}
	unlock()
	logPath := filepath.Join(workdir, logFile)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	// A lab that did not start leaves nothing behind: its log was shown.
	started := false
	defer func() {
		if !started {
			_ = os.Remove(logPath)
			_ = os.Remove(workdir) // only if empty
		}
	}()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	follow, err := os.Open(logPath)
	if err != nil {
		return err
	}
	defer follow.Close()
	pid := cmd.Process.Pid
	for {
		_, _ = io.Copy(out, follow)
		if s, err := ReadState(workdir); err == nil && s.Ready && s.PID == pid {
			_, _ = io.Copy(out, follow)
			started = true
			return nil
		}
		select {
		case err := <-exited:
			_, _ = io.Copy(out, follow)
			return fmt.Errorf("the lab did not start (%v); its output is above", err)
		case <-ctx.Done():
			_ = syscall.Kill(pid, syscall.SIGTERM)
			<-exited
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Down stops the lab in workdir and removes its state.
func Down(workdir string, out io.Writer) error {
	s, err := ReadState(workdir)
	if err != nil && !errors.Is(err, ErrNoLab) {
		// Damaged state: still make sure nothing of the lab runs.
		s = &State{}
	}
	if s != nil {
		if process.Alive(s.PID) && ownsWorkdir(s.PID, workdir) {
			fmt.Fprintf(out, "stopping lab (pid %d)\n", s.PID)
			_ = syscall.Kill(s.PID, syscall.SIGTERM)
			if !waitGone(s.PID, 90*time.Second) {
				_ = syscall.Kill(s.PID, syscall.SIGKILL)
				waitGone(s.PID, 10*time.Second)
			}
		}
		// Children die with their owner; this only catches the unexpected.
		for _, c := range s.Components {
			if process.Alive(c.PID) && ownsWorkdir(c.PID, workdir) {
				_ = syscall.Kill(c.PID, syscall.SIGKILL)
				waitGone(c.PID, 10*time.Second)
			}
		}
	}
	// removeState puts the host back first (cleanUpHost): it finds the
	// processes a killed lab left (shims, containers) by the lab's network
	// namespaces and cgroups, so those are removed only after them.
	if err := removeState(workdir); err != nil {
		return err
	}
	for _, name := range []string{logFile, lockFile} {
		if err := os.Remove(filepath.Join(workdir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	_ = os.Remove(workdir) // only if empty: never remove what the lab did not write
	if s == nil {
		fmt.Fprintf(out, "no lab in %s\n", workdir)
	} else {
		fmt.Fprintf(out, "lab in %s removed\n", workdir)
	}
	return nil
}

// ownsWorkdir guards against pid reuse: the process must mention workdir in
// its command line, or be the lab owner itself (which is started with it).
func ownsWorkdir(pid int, workdir string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	abs, _ := filepath.Abs(workdir)
	return bytes.Contains(cmdline, []byte(workdir)) || bytes.Contains(cmdline, []byte(abs)) || bytes.Contains(cmdline, []byte("lab\x00up"))
}

func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !process.Alive(pid) {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// Running returns the state of a ready lab whose owner is alive.
func Running(workdir string) (*State, error) {
	s, err := ReadState(workdir)
	if err != nil {
		return nil, err
	}
	if !process.Alive(s.PID) {
		return nil, fmt.Errorf("the lab in %s is not running (pid %d is gone): clean up with `sitegridctl lab down --workdir %s`", workdir, s.PID, workdir)
	}
	if !s.Ready {
		return nil, fmt.Errorf("the lab in %s is still starting", workdir)
	}
	return s, nil
}

func clientFor(s *State) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// Status writes the lab's processes, sites and nodes to out.
func Status(ctx context.Context, workdir string, out io.Writer) error {
	s, err := Running(workdir)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "lab in %s, up since %s (pid %d)\napiserver %s\nkubeconfig %s\n\n", workdir, s.StartedAt.Format(time.RFC3339), s.PID, s.Endpoint, s.Kubeconfig)
	edgeNodes, err := EdgeNodes(ctx, workdir)
	if err != nil {
		return err
	}
	procs := s.Components
	for _, n := range edgeNodes {
		kubelet := "kwok/"
		if n.Real {
			kubelet = "kubelet/"
		}
		switch {
		case n.LiteAPIServerPID != 0:
			procs = append(procs, controlplane.Component{Name: "lite-apiserver/" + n.Name, PID: n.LiteAPIServerPID})
		case n.HubPID != 0 || !n.Real:
			procs = append(procs, controlplane.Component{Name: "sitegrid-hub/" + n.Name, PID: n.HubPID})
		}
		procs = append(procs, controlplane.Component{Name: kubelet + n.Name, PID: n.KubeletPID})
		if n.KubeProxyPID != 0 {
			procs = append(procs, controlplane.Component{Name: "kube-proxy/" + n.Name, PID: n.KubeProxyPID})
		}
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESS\tPID\tPORT\tSTATE")
	for _, c := range procs {
		state := "running"
		if !process.Alive(c.PID) {
			state = "exited"
		}
		port := "-"
		if c.Port != 0 {
			port = strconv.Itoa(c.Port)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", c.Name, c.PID, port, state)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	cs, err := clientFor(s)
	if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	byName := map[string]NodeStatus{}
	for _, n := range edgeNodes {
		byName[n.Name] = n
	}
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SITE\tNODE\tINTERNAL-IP\tREADY\tPOWER\tUPLINK\tHUB\tHUB-ADDRESS\tTUNNEL")
	sort.Slice(nodes.Items, func(i, j int) bool {
		a, b := nodes.Items[i], nodes.Items[j]
		if a.Labels[SiteLabel] != b.Labels[SiteLabel] {
			return a.Labels[SiteLabel] < b.Labels[SiteLabel]
		}
		return a.Name < b.Name
	})
	for i := range nodes.Items {
		n := &nodes.Items[i]
		site := n.Labels[SiteLabel]
		if site == "" {
			site = "-"
		}
		power, uplink, hub, addr, tunnel := "-", "-", "-", "-", "-"
		if e, ok := byName[n.Name]; ok {
			power, uplink, hub, addr = e.Power, e.Link, e.Hub, e.HubAddress
			if e.Tunnel != "" {
				tunnel = e.Tunnel
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\t%s\t%s\t%s\t%s\n", site, n.Name, internalIP(n), controlplane.NodeReady(n), power, uplink, hub, addr, tunnel)
	}
	return tw.Flush()
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return "-"
}

// ParseLabels reads "k=v,k2=v2".
func ParseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return labels, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q is not key=value", kv)
		}
		labels[k] = v
	}
	return labels, nil
}

// AddNode adds an edge node (uplink, hub, kubelet) to the running lab and
// waits until it is Ready. A node of a lab site (label
// sitegrid.io/site=site-N) gets an address in that site's network.
func AddNode(ctx context.Context, workdir, name string, labels map[string]string, real bool, out io.Writer) error {
	reply, err := control(ctx, workdir, http.MethodPost, "/v1/nodes", controlRequest{Name: name, Labels: labels, Real: real})
	if err != nil {
		return err
	}
	kind := "with its own uplink and hub"
	if real {
		kind = "a real node: containerd, kubelet, kube-proxy and hub"
	}
	fmt.Fprintf(out, "node %s added (InternalIP %s, %s) and Ready\n", name, reply.IP, kind)
	return nil
}

// Reboot power-cycles the named nodes, or every node of the named sites: a
// real node loses every process, its runtime state and its network, keeps
// its disks, and boots again (also while partitioned).
func Reboot(ctx context.Context, workdir string, targets []string, out io.Writer) error {
	return setUplinks(ctx, workdir, "/v1/reboot", targets, "rebooted", "no node rebooted", out)
}

// Leave runs sitegrid-hub leave on the named real nodes: their hubs stop,
// the kubelet's and kube-proxy's kubeconfigs are restored and they talk to
// the cloud directly. Join joins them again, with a new token.
func Leave(ctx context.Context, workdir string, targets []string, out io.Writer) error {
	return setUplinks(ctx, workdir, "/v1/leave", targets, "left (its hub stopped; kubelet and kube-proxy direct):", "no node was joined", out)
}

// Join joins the named real nodes through sitegrid-hub join.
func Join(ctx context.Context, workdir string, targets []string, out io.Writer) error {
	return setUplinks(ctx, workdir, "/v1/join", targets, "joined (kubelet and kube-proxy through its hub):", "every node was joined already", out)
}

// LoadImage imports a docker-archive or OCI tarball into every real node's
// containerd (and every real node that boots later).
func LoadImage(ctx context.Context, workdir, file string, out io.Writer) error {
	abs, err := filepath.Abs(file)
	if err != nil {
		return err
	}
	reply, err := control(ctx, workdir, http.MethodPost, "/v1/images", controlRequest{File: abs})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "loaded %s into %s\n", strings.Join(reply.Images, ", "), strings.Join(reply.Nodes, ", "))
	return nil
}

// freeNodeIP picks the lowest free address of a site's network, or of the
// network for nodes outside the lab's sites (198.18.250.0/24).
func freeNodeIP(site string, used map[string]bool) (string, error) {
	subnet := 250
	if n, ok := strings.CutPrefix(site, "site-"); ok {
		if i, err := strconv.Atoi(n); err == nil && i >= 1 && i <= MaxSites {
			subnet = i
		}
	}
	for host := 10; host < 255; host++ {
		ip := net.IPv4(198, 18, byte(subnet), byte(host)).String()
		if !used[ip] {
			return ip, nil
		}
	}
	return "", fmt.Errorf("no free address left in 198.18.%d.0/24", subnet)
}

// RemoveNode stops an edge node of the running lab and deletes it.
func RemoveNode(ctx context.Context, workdir, name string, out io.Writer) error {
	if _, err := control(ctx, workdir, http.MethodDelete, "/v1/nodes/"+url.PathEscape(name), controlRequest{}); err != nil {
		return err
	}
	fmt.Fprintf(out, "node %s removed\n", name)
	return nil
}

// ctlCommand is how the user can run this sitegridctl: its name when PATH
// finds this very binary, else its path.
func ctlCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return "sitegridctl"
	}
	if onPath, err := exec.LookPath("sitegridctl"); err == nil {
		if a, errA := filepath.EvalSymlinks(onPath); errA == nil {
			if b, errB := filepath.EvalSymlinks(exe); errB == nil && a == b {
				return "sitegridctl"
			}
		}
	}
	return exe
}

func printGuide(out io.Writer, workdir string, s *State) {
	ctl := ctlCommand()
	flag := ""
	if workdir != DefaultWorkdir() {
		flag = " --workdir " + workdir
	}
	fmt.Fprintf(out, "sitegrid lab is up.\n\n")
	fmt.Fprintf(out, "  apiserver   %s\n  kubeconfig  %s\n\n", s.Endpoint, s.Kubeconfig)
	fmt.Fprintf(out, "  sites: node label %s; NodeGroup %q makes one NodeUnit per site\n", SiteLabel, s.Group)
	fmt.Fprintf(out, "  and labels its nodes %s=<unit>:\n", s.Group)
	for _, site := range s.Sites {
		fmt.Fprintf(out, "    %-10s unit %-14s %s\n", site.Name, UnitName(site.Name), strings.Join(site.Nodes, ", "))
	}
	fmt.Fprintf(out, "\nTry:\n")
	fmt.Fprintf(out, "  export KUBECONFIG=%s\n", s.Kubeconfig)
	fmt.Fprintf(out, "  kubectl get nodes -L %s,%s\n", SiteLabel, s.Group)
	fmt.Fprintf(out, "  kubectl get nodeunits,nodegroups\n")
	fmt.Fprintf(out, "  %s site list --kubeconfig %s\n", ctl, s.Kubeconfig)
	fmt.Fprintf(out, "  kubectl apply -f config/samples/echo-grid.yaml   # one echo service per site\n")
	fmt.Fprintf(out, "  %s lab add-node site-1-node-9 --labels %s=site-1%s\n", ctl, SiteLabel, flag)
	if len(s.Sites) > 0 && len(s.Sites[0].Nodes) > 0 {
		node := s.Sites[0].Nodes[0]
		fmt.Fprintf(out, "  kubectl --kubeconfig $(%s lab kubeconfig --via-hub %s%s) get pods -A   # through %s's hub\n", ctl, node, flag, node)
		fmt.Fprintf(out, "  %s lab partition %s%s   # cut the site's uplink; its hubs answer from cache\n", ctl, s.Sites[0].Name, flag)
		fmt.Fprintf(out, "  %s lab heal%s\n", ctl, flag)
	}
	fmt.Fprintf(out, "  %s lab status%s\n", ctl, flag)
	fmt.Fprintf(out, "  %s lab down%s\n\n", ctl, flag)
}
