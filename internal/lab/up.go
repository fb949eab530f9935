package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	"github.com/sitegrid/sitegrid/config"
	healthcontroller "github.com/sitegrid/sitegrid/internal/controller/health"
	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/gobuild"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/process"
	"golang.org/x/sync/errgroup"
)

// Limits on the lab's size: every node is a real Node object on one machine.
const (
	MaxSites        = 100
	MaxNodesPerSite = 50
	// MaxNodes bounds sites × nodes: each node runs a hub and a kwok.
	MaxNodes = 100
	// MaxRealNodes bounds the real nodes of a lab (docs/lab.md: what a
	// 2-core machine holds).
	MaxRealNodes = 8
	// DefaultAPIServerPort is the lab apiserver's port on 127.0.0.1.
	DefaultAPIServerPort = 6443
)

// ManagerIdentity is the user the lab's sitegrid-manager authenticates as:
// the ServiceAccount that config/rbac binds, so the lab runs with the same
// permissions as an installed manager.
const ManagerIdentity = "system:serviceaccount:sitegrid-system:sitegrid-manager"

// UpOptions configure a lab.
type UpOptions struct {
	Workdir       string
	Sites         int
	NodesPerSite  int
	APIServerPort int
	// NodeMonitorGracePeriod is how long the cloud waits for a node's lease
	// before marking it NotReady (0: Kubernetes' default, 40s). Simulated
	// kubelets renew their lease four times per period.
	NodeMonitorGracePeriod time.Duration
	// KubeProxy runs the real kube-proxy on every node, each in the node's
	// own network namespace (root only; see kubeproxy.go).
	KubeProxy bool
	// RealNodes makes every node a real node: containerd, the real kubelet
	// and kube-proxy in its namespace on its site's LAN (root only; see
	// realnode.go).
	RealNodes bool
	// SuperEdgeAgents boots the real nodes on SuperEdge's edge agent
	// lite-apiserver instead of sitegrid-hub; `lab join` replaces it
	// (superedge.go).
	SuperEdgeAgents bool
	// TunnelReplicas is how many sitegrid-tunnel replicas run (1 to
	// MaxTunnelReplicas); each node's hub knows them all, starting from its
	// own turn's.
	TunnelReplicas int
	// MetricsServer runs metrics-server beside the control plane, scraping
	// kubelets through the tunnel (metricsserver.go): `kubectl top`.
	MetricsServer bool
	// ManagerBinary, HubBinary and TunnelBinary override where
	// sitegrid-manager, sitegrid-hub and sitegrid-tunnel are found.
	ManagerBinary, HubBinary, TunnelBinary string
	// Out receives progress and the guide.
	Out io.Writer
	// Ready, when set, is called once the lab is ready.
	Ready func(*State)
}

func (o *UpOptions) validate() error {
	if o.Sites < 1 || o.Sites > MaxSites {
		return fmt.Errorf("--sites must be between 1 and %d, not %d", MaxSites, o.Sites)
	}
	if o.NodesPerSite < 1 || o.NodesPerSite > MaxNodesPerSite {
		return fmt.Errorf("--nodes-per-site must be between 1 and %d, not %d", MaxNodesPerSite, o.NodesPerSite)
	}
	if o.Sites*o.NodesPerSite > MaxNodes {
		return fmt.Errorf("--sites × --nodes-per-site is %d; the lab runs at most %d nodes (each runs a hub and a kubelet)", o.Sites*o.NodesPerSite, MaxNodes)
	}
	if o.APIServerPort < 1 || o.APIServerPort > 65535 {
		return fmt.Errorf("--apiserver-port %d is not a port", o.APIServerPort)
	}
	if o.NodeMonitorGracePeriod != 0 && o.NodeMonitorGracePeriod < 4*time.Second {
		return fmt.Errorf("--node-monitor-grace-period must be at least 4s, not %s", o.NodeMonitorGracePeriod)
	}
	if o.Workdir == "" {
		return errors.New("no workdir")
	}
	if o.TunnelReplicas == 0 {
		o.TunnelReplicas = 1
	}
	if o.TunnelReplicas < 1 || o.TunnelReplicas > MaxTunnelReplicas {
		return fmt.Errorf("--tunnel-replicas must be between 1 and %d, not %d", MaxTunnelReplicas, o.TunnelReplicas)
	}
	if o.SuperEdgeAgents && !o.RealNodes {
		return errors.New("--superedge-agents runs SuperEdge's agents on real nodes: add --real-nodes")
	}
	if o.RealNodes {
		if o.Sites*o.NodesPerSite > MaxRealNodes {
			return fmt.Errorf("--real-nodes: %d nodes asked for; the lab runs at most %d real nodes (each runs containerd and a kubelet of about 150 MB)", o.Sites*o.NodesPerSite, MaxRealNodes)
		}
		// Checked before anything starts: the longest node name's sockets.
		longest := NodeName(SiteName(o.Sites-1), o.NodesPerSite-1)
		if err := realNodeContainerd(o.Workdir, longest).CheckSocket(); err != nil {
			return err
		}
		return RealNodesAvailable()
	}
	if o.KubeProxy {
		return KubeProxyAvailable()
	}
	return nil
}

// SiteName names the i-th site (from 0).
func SiteName(i int) string { return "site-" + strconv.Itoa(i+1) }

// NodeName names the j-th node (from 0) of a site.
func NodeName(site string, j int) string { return site + "-node-" + strconv.Itoa(j+1) }

// nodeIP gives node j of site i an address of its own site network,
// 198.18.<i+1>.<j+10>.
func nodeIP(i, j int) string { return fmt.Sprintf("198.18.%d.%d", i+1, j+10) }

// Up starts a lab and runs it until ctx ends or one of its processes exits;
// then it stops everything and removes the lab's state.
func Up(ctx context.Context, opts UpOptions) (err error) {
	if err := opts.validate(); err != nil {
		return err
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	if err := os.MkdirAll(opts.Workdir, 0o700); err != nil {
		return err
	}
	unlock, err := lockWorkdir(opts.Workdir)
	if err != nil {
		return err
	}
	// Whichever way the lab ends, even before it started anything, it
	// leaves no state, lock or empty workdir behind.
	defer func() {
		if rmErr := removeState(opts.Workdir); rmErr != nil && err == nil {
			err = rmErr
		}
		_ = os.Remove(filepath.Join(opts.Workdir, lockFile))
		unlock()
		_ = os.Remove(opts.Workdir) // only if empty
	}()
	// A lab whose owner was killed leaves state but no processes (they die
	// with it); clear it.
	if err := removeState(opts.Workdir); err != nil {
		return err
	}
	// Recorded at once, so `lab down` can stop a lab that is still starting.
	if err := writeState(opts.Workdir, &State{PID: os.Getpid(), StartedAt: time.Now()}); err != nil {
		return err
	}

	nsteps := 7
	if opts.SuperEdgeAgents {
		nsteps++
	}
	if opts.MetricsServer {
		nsteps++
	}
	steps := newStepper(out, nsteps)
	var bin kubebin.Set
	if err := steps.run("find or build the Kubernetes binaries", func() error {
		bin, err = kubebin.Ensure(ctx, kubebin.Options{Progress: out})
		return err
	}); err != nil {
		return err
	}
	var superEdge superEdgeOptions
	if opts.SuperEdgeAgents {
		if err := steps.run("find or build SuperEdge's lite-apiserver", func() error {
			se, err := kubebin.Ensure(ctx, kubebin.Options{Progress: out, Kit: kubebin.SuperEdge})
			superEdge = superEdgeOptions{liteAPIServerBin: se.Path(kubebin.SuperEdgeLiteAPIServer)}
			return err
		}); err != nil {
			return err
		}
	}
	var metricsServerBin string
	if opts.MetricsServer {
		if err := steps.run("find or build metrics-server", func() error {
			ms, err := kubebin.Ensure(ctx, kubebin.Options{Progress: out, Kit: kubebin.MetricsServerKit})
			metricsServerBin = ms.Path(kubebin.MetricsServer)
			return err
		}); err != nil {
			return err
		}
	}
	var managerBin, hubBin, tunnelBin string
	if err := steps.run("find or build sitegrid-manager, sitegrid-hub and sitegrid-tunnel", func() error {
		if managerBin, err = findBinary(ctx, opts.Workdir, "sitegrid-manager", opts.ManagerBinary); err != nil {
			return err
		}
		if tunnelBin, err = findBinary(ctx, opts.Workdir, "sitegrid-tunnel", opts.TunnelBinary); err != nil {
			return err
		}
		hubBin, err = findBinary(ctx, opts.Workdir, "sitegrid-hub", opts.HubBinary)
		return err
	}); err != nil {
		return err
	}

	socket, err := egressSocket(opts.Workdir)
	if err != nil {
		return err
	}
	var cp *controlplane.ControlPlane
	var nodes *edge
	defer func() {
		if cp != nil {
			fmt.Fprintln(out, "stopping the lab")
		}
		if nodes != nil {
			nodes.stopAll()
		}
		if cp != nil {
			cp.Stop()
		}
	}()
	if err := steps.run("start etcd, kube-apiserver, kube-controller-manager and kube-scheduler", func() error {
		cfg := controlplane.Config{
			Dir: filepath.Join(opts.Workdir, controlPlaneDir), Bin: bin, APIServerPort: opts.APIServerPort, NoSharedKwok: true,
			EgressSocket: socket,
		}
		if g := opts.NodeMonitorGracePeriod; g != 0 {
			cfg.NodeLeaseSeconds = int(g / time.Second)
			cfg.ControllerManagerArgs = append(cfg.ControllerManagerArgs, "--node-monitor-grace-period="+g.String(), "--node-monitor-period=1s")
		}
		cp, err = controlplane.Start(ctx, cfg)
		return err
	}); err != nil {
		return err
	}
	if err := steps.run("install sitegrid's CRDs and RBAC", func() error {
		return InstallManifests(ctx, cp.RESTConfig(), config.Manifests)
	}); err != nil {
		return err
	}
	var mgr *process.Process
	defer func() {
		if mgr != nil {
			mgr.Stop(40 * time.Second)
		}
	}()
	var tunnel *tunnelService
	defer func() {
		if tunnel != nil {
			tunnel.stop()
		}
	}()
	var metricsServer *process.Process
	defer func() {
		if metricsServer != nil {
			metricsServer.Stop(10 * time.Second)
		}
	}()
	cloud := "start sitegrid-manager and sitegrid-tunnel"
	if opts.MetricsServer {
		cloud = "start sitegrid-manager, sitegrid-tunnel and metrics-server"
	}
	if err := steps.run(cloud, func() error {
		if mgr, err = startManager(ctx, cp, managerBin); err != nil {
			return err
		}
		if tunnel, err = startTunnels(ctx, cp, tunnelBin, socket, opts.TunnelReplicas); err != nil || !opts.MetricsServer {
			return err
		}
		metricsServer, err = startMetricsServer(ctx, cp, metricsServerBin, tunnel.kubelets.Addr())
		return err
	}); err != nil {
		return err
	}
	state := &State{PID: os.Getpid(), StartedAt: time.Now(), Endpoint: cp.Endpoint, Kubeconfig: cp.AdminKubeconfig}
	kubelet := "kwok as kubelet"
	if opts.RealNodes {
		kubelet = "containerd, kubelet, kube-proxy: real nodes"
	}
	if opts.SuperEdgeAgents {
		kubelet += " on SuperEdge's lite-apiserver"
	}
	if err := steps.run(fmt.Sprintf("create %d sites of %d edge nodes (each: uplink, sitegrid-hub, %s)", opts.Sites, opts.NodesPerSite, kubelet), func() error {
		eo := edgeOptions{workdir: opts.Workdir, hubBin: hubBin, kubeProxyBin: bin.Path(kubebin.KubeProxy), kubeProxyAll: opts.KubeProxy,
			real: realOptions{kubeletBin: bin.Path(kubebin.Kubelet)}, superEdge: superEdge, tunnelAgents: tunnel.agents()}
		if nodes, err = newEdge(ctx, cp, eo); err != nil {
			return err
		}
		state.Sites, err = createSites(ctx, cp, nodes, opts.Sites, opts.NodesPerSite, opts.RealNodes)
		return err
	}); err != nil {
		return err
	}
	if err := steps.run(fmt.Sprintf("group the sites: NodeGroup %s with one NodeUnit per site", GroupName), func() error {
		state.Group = GroupName
		return groupSites(ctx, cp, state.Sites)
	}); err != nil {
		return err
	}
	stopControl, err := serveControl(ctx, opts.Workdir, nodes)
	if err != nil {
		return err
	}
	defer stopControl()
	state.Ready = true
	state.Components = cp.Components()
	cloudProcs := []*process.Process{mgr}
	if metricsServer != nil {
		cloudProcs = append(cloudProcs, metricsServer)
	}
	var replicas []*process.Process
	for _, r := range tunnel.replicas {
		replicas = append(replicas, r.proc)
	}
	for _, p := range append(cloudProcs, replicas...) {
		state.Components = append(state.Components, controlplane.Component{Name: p.Spec.Name, PID: p.PID(), Log: p.Spec.LogFile})
	}
	if err := writeState(opts.Workdir, state); err != nil {
		return err
	}
	fmt.Fprintf(out, "lab ready in %s\n\n", steps.elapsed())
	printGuide(out, opts.Workdir, state)
	if opts.Ready != nil {
		opts.Ready(state)
	}
	return supervise(ctx, cp, cloudProcs, replicas)
}

// supervise waits for a signal, for a process of the lab to exit, or for
// the last of the tunnel's replicas to: one of several exiting is what
// the others are there for.
func supervise(ctx context.Context, cp *controlplane.ControlPlane, procs, replicas []*process.Process) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if name, exited, err := cp.Exited(); exited {
				return fmt.Errorf("%s exited (%v); see %s", name, err, filepath.Join(cp.Dir, "logs", name+".log"))
			}
			for _, p := range procs {
				if exited, err := p.Exited(); exited {
					return fmt.Errorf("%s exited (%v); see %s", p.Spec.Name, err, p.Spec.LogFile)
				}
			}
			live := 0
			for _, p := range replicas {
				if exited, _ := p.Exited(); !exited {
					live++
				}
			}
			if live == 0 {
				_, err := replicas[0].Exited()
				return fmt.Errorf("every sitegrid-tunnel replica exited (%v); see %s", err, replicas[0].Spec.LogFile)
			}
		}
	}
}

// findBinary finds one of sitegrid's binaries: override, next to this
// executable, built from the repository, or on PATH.
func findBinary(ctx context.Context, workdir, name, override string) (string, error) {
	if override != "" {
		return override, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	root, err := kubebin.FindRepoRoot(wd)
	if err != nil {
		if p, lookErr := exec.LookPath(name); lookErr == nil {
			return p, nil
		}
		return "", fmt.Errorf("%s not found next to sitegridctl or on PATH, and %w: run `make build`", name, err)
	}
	out := filepath.Join(workdir, binDir, name)
	cmd := gobuild.Command(ctx, out, "./cmd/"+name)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", name, err, msg)
	}
	return out, nil
}

func startManager(ctx context.Context, cp *controlplane.ControlPlane, path string) (*process.Process, error) {
	kc, err := cp.WriteKubeconfig("sitegrid-manager", ManagerIdentity, "system:serviceaccounts", "system:serviceaccounts:sitegrid-system")
	if err != nil {
		return nil, err
	}
	metricsPort, err := controlplane.FreePort()
	if err != nil {
		return nil, err
	}
	probePort, err := controlplane.FreePort()
	if err != nil {
		return nil, err
	}
	// The node health webhook, served on loopback with a certificate of
	// the cluster CA, registered by URL once the manager is ready.
	webhookPort, err := controlplane.FreePort()
	if err != nil {
		return nil, err
	}
	webhookDir := filepath.Join(cp.Dir, "manager-webhook")
	if err := os.MkdirAll(webhookDir, 0o700); err != nil {
		return nil, err
	}
	serving, err := cp.IssueCert(pki.LeafRequest{CommonName: "sitegrid-manager-webhook", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	if err != nil {
		return nil, err
	}
	if _, _, err := pki.WriteKeyPair(webhookDir, "tls", serving.Cert, serving.Key); err != nil {
		return nil, err
	}
	p, err := process.Start(process.Spec{
		Name: "sitegrid-manager", Path: path,
		Args: []string{
			"--kubeconfig=" + kc,
			"--leader-elect=true", "--leader-election-namespace=sitegrid-system",
			"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(metricsPort),
			"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(probePort),
			"--webhook-bind-address=127.0.0.1", "--webhook-port=" + strconv.Itoa(webhookPort), "--webhook-cert-dir=" + webhookDir,
		},
		LogFile: filepath.Join(cp.Dir, "logs", "sitegrid-manager.log"),
	})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err = p.WaitReady(wctx, 200*time.Millisecond, process.HTTPReady(nil, fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort)))
	if err == nil {
		err = registerHealthWebhooks(ctx, cp, "https://127.0.0.1:"+strconv.Itoa(webhookPort))
	}
	if err == nil {
		err = registerConversion(ctx, cp, "https://127.0.0.1:"+strconv.Itoa(webhookPort))
	}
	if err != nil {
		p.Stop(10 * time.Second)
		return nil, err
	}
	return p, nil
}

// registerHealthWebhooks registers the manager's health webhooks, served
// at base.
func registerHealthWebhooks(ctx context.Context, cp *controlplane.ControlPlane, base string) error {
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return err
	}
	cs, err := cp.Clientset()
	if err != nil {
		return err
	}
	url := base + healthcontroller.WebhookPath
	wh := healthcontroller.WebhookConfiguration(admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: ca}, healthcontroller.DefaultNodeControllerUsers)
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, wh, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("register the node health webhook: %w", err)
	}
	reportsURL := base + healthcontroller.ReportsWebhookPath
	rw := healthcontroller.ReportsWebhookConfiguration(admissionregistrationv1.WebhookClientConfig{URL: &reportsURL, CABundle: ca})
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, rw, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("register the health reports webhook: %w", err)
	}
	return nil
}

func createSites(ctx context.Context, cp *controlplane.ControlPlane, nodes *edge, sites, perSite int, real bool) ([]Site, error) {
	cs, err := cp.Clientset()
	if err != nil {
		return nil, err
	}
	result := make([]Site, sites)
	var all []string
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := 0; i < sites; i++ {
		result[i].Name = SiteName(i)
		for j := 0; j < perSite; j++ {
			n := controlplane.Node{Name: NodeName(result[i].Name, j), Labels: map[string]string{SiteLabel: result[i].Name}, InternalIP: nodeIP(i, j)}
			result[i].Nodes = append(result[i].Nodes, n.Name)
			all = append(all, n.Name)
			g.Go(func() error { return nodes.add(gctx, n, result[i].Name, real) })
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return result, controlplane.WaitNodesReady(ctx, cs, 2*time.Minute, all...)
}

// GroupName is the lab's NodeGroup: one NodeUnit per value of SiteLabel, and
// every node labelled GroupName=<unit>.
const GroupName = "lab"

// UnitName is the NodeUnit the lab's group makes for a site.
func UnitName(site string) string { return sitev1.AutoUnitName(GroupName, []string{site}) }

// groupSites creates the lab's NodeGroup and waits until every node carries
// its unit label.
func groupSites(ctx context.Context, cp *controlplane.ControlPlane, sites []Site) error {
	scheme := runtime.NewScheme()
	if err := sitev1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(cp.RESTConfig(), client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	group := &sitev1.NodeGroup{
		ObjectMeta: metav1.ObjectMeta{Name: GroupName},
		Spec:       sitev1.NodeGroupSpec{AutoFindNodeKeys: []string{SiteLabel}},
	}
	if err := c.Create(ctx, group); err != nil {
		return fmt.Errorf("create NodeGroup %s: %w", GroupName, err)
	}
	cs, err := cp.Clientset()
	if err != nil {
		return err
	}
	var missing []string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		missing = missing[:0]
		for _, s := range sites {
			for _, name := range s.Nodes {
				n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
				if err != nil || n.Labels[GroupName] != UnitName(s.Name) {
					missing = append(missing, name)
				}
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("sitegrid-manager did not label nodes %v with their unit: %w", missing, err)
	}
	// The lab is up when what it prints is true: every unit counts its
	// Ready nodes and the group lists every unit (`site list` shows them).
	var behind []string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		behind = behind[:0]
		for _, s := range sites {
			unit := &sitev1.NodeUnit{}
			want := fmt.Sprintf("%d/%d", len(s.Nodes), len(s.Nodes))
			if err := c.Get(ctx, client.ObjectKey{Name: UnitName(s.Name)}, unit); err != nil || unit.Status.ReadyRate != want {
				behind = append(behind, fmt.Sprintf("unit %s (ready %q, want %s)", UnitName(s.Name), unit.Status.ReadyRate, want))
			}
		}
		g := &sitev1.NodeGroup{}
		if err := c.Get(ctx, client.ObjectKey{Name: GroupName}, g); err != nil || g.Status.UnitNumber != len(sites) {
			behind = append(behind, fmt.Sprintf("group %s (%d units, want %d)", GroupName, g.Status.UnitNumber, len(sites)))
		}
		return len(behind) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("sitegrid-manager did not report the sites: %s: %w", strings.Join(behind, ", "), err)
	}
	return nil
}

// lockWorkdir makes sure one lab at a time uses workdir.
func lockWorkdir(workdir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(workdir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		msg := fmt.Sprintf("the lab workdir %s is in use by another lab", workdir)
		if s, serr := ReadState(workdir); serr == nil {
			msg += fmt.Sprintf(" (pid %d, apiserver %s)", s.PID, s.Endpoint)
		}
		return nil, fmt.Errorf("%s: stop it with `sitegridctl lab down --workdir %s`, or use another --workdir", msg, workdir)
	}
	return func() { _ = f.Close() }, nil
}

// removeState deletes what a lab wrote into workdir, and workdir itself when
// nothing else is left in it.
func removeState(workdir string) error {
	// The host first: the lab's mounts are under its folders.
	if err := cleanUpHost(workdir); err != nil {
		return err
	}
	for _, name := range []string{stateFile, stateFile + ".tmp", socketFile, controlPlaneDir, binDir} {
		if err := os.RemoveAll(filepath.Join(workdir, name)); err != nil {
			return err
		}
	}
	return nil
}

type stepper struct {
	out   io.Writer
	n, i  int
	start time.Time
}

func newStepper(out io.Writer, n int) *stepper { return &stepper{out: out, n: n, start: time.Now()} }

func (s *stepper) run(what string, f func() error) error {
	s.i++
	t := time.Now()
	fmt.Fprintf(s.out, "[%d/%d] %s ...\n", s.i, s.n, what)
	if err := f(); err != nil {
		fmt.Fprintf(s.out, "[%d/%d] failed after %s\n", s.i, s.n, round(time.Since(t)))
		return err
	}
	fmt.Fprintf(s.out, "[%d/%d] done in %s\n", s.i, s.n, round(time.Since(t)))
	return nil
}

func (s *stepper) elapsed() time.Duration { return round(time.Since(s.start)) }

func round(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}
