package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/sitegrid/sitegrid/internal/atomicfile"
	"github.com/sitegrid/sitegrid/internal/health"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/lab/containerd"
	"github.com/sitegrid/sitegrid/internal/lab/images"
	"github.com/sitegrid/sitegrid/internal/lab/machine"
	"github.com/sitegrid/sitegrid/internal/lab/netns"
	"github.com/sitegrid/sitegrid/internal/lab/sitenet"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/process"
)

// A real node (`lab up --real-nodes`, `lab add-node --real`) is an edge node
// whose kubelet is the real one, with containerd and real containers, all in
// the node's network namespace on its site's LAN (internal/lab/sitenet).
// It reaches the cloud only through the node's uplink: first directly, as a
// node kubeadm joined does, then through the hub `sitegrid-hub join` installs
// (join.go). The kubelet authenticates with a certificate of
// system:node:<node>, registers its Node itself, and serves its API with
// webhook authentication and authorization, as kubeadm sets a kubelet up. What it changes on the host (sysctls, cgroups, mounts) is
// undone when the node goes (internal/lab/machine).

// realNodeMarker marks the Nodes of real lab nodes, so the lab deletes only
// its own.
const realNodeMarker = "lab.sitegrid.io/real-node"

// Inside every node's namespace the kubelet's ports are the usual ones.
const (
	kubeletPort        = 10250
	kubeletHealthzPort = 10248
)

// sysctlsFile records the host's kernel settings before a kubelet ran.
const sysctlsFile = "host-sysctls.json"

// realNode is what a real node has beyond an edgeNode.
type realNode struct {
	ctr           containerd.Config
	cgroupRoot    string
	kubeletDir    string
	kubeletConfig string
	// labels are the node's labels, which its kubelet registers.
	labels map[string]string
	// network is the lab's pod network name (cniNetwork).
	network string
	// podCIDR is what the controller-manager gave the node.
	podCIDR string
	// hubBase is the node's hub settings `sitegrid-hub join` completes;
	// joined: the node runs its hub (join.go).
	hubBase string
	joined  bool
	// corefile and dnsKubeconfig are the node's DNS's (dns.go).
	corefile, dnsKubeconfig string
	// superEdge is set on a node that boots on SuperEdge's agents
	// (superedge.go): their files.
	superEdge *superEdgeFiles
}

// realOptions are what real nodes need of the lab.
type realOptions struct {
	kubeletBin string
}

// RealNodesAvailable reports why real nodes cannot run here, or nil.
func RealNodesAvailable() error {
	if err := KubeProxyAvailable(); err != nil {
		return fmt.Errorf("real nodes: %w", err)
	}
	if err := containerd.Available(); err != nil {
		return fmt.Errorf("real nodes: %w", err)
	}
	if _, err := os.Stat(images.BusyboxPath); err != nil {
		return fmt.Errorf("real nodes: no %s for the lab's busybox image (Debian package busybox-static)", images.BusyboxPath)
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return errors.New("real nodes: nsenter not found (Debian package util-linux)")
	}
	return nil
}

// images are what every real node's containerd holds: the lab's own, built
// at the first real node, and those `lab load-image` loaded since.
func (e *edge) images(ctx context.Context) ([]images.Archive, error) {
	e.bootMu.Lock()
	defer e.bootMu.Unlock()
	if e.labImages == nil {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		root, err := kubebin.FindRepoRoot(wd)
		if err != nil {
			return nil, fmt.Errorf("the lab builds its images from the sitegrid repository: %w", err)
		}
		built, err := images.BuildLab(ctx, root, filepath.Join(e.workdir, controlPlaneDir, "images"))
		if err != nil {
			return nil, err
		}
		e.labImages = built
	}
	return append(append([]images.Archive(nil), e.labImages...), e.loadedImages...), nil
}

// cniPlugins is the lab's CNI plugin folder: Debian's plugins and
// sitegrid-ipam, made at the first real node.
func (e *edge) cniPlugins(ctx context.Context) (string, error) {
	e.bootMu.Lock()
	defer e.bootMu.Unlock()
	dir := filepath.Join(e.workdir, controlPlaneDir, "cni-bin")
	if _, err := os.Stat(filepath.Join(dir, ipamPlugin)); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(containerd.CNIBinDir)
	if err != nil {
		return "", err
	}
	for _, en := range entries {
		if err := os.Symlink(filepath.Join(containerd.CNIBinDir, en.Name()), filepath.Join(dir, en.Name())); err != nil && !errors.Is(err, os.ErrExist) {
			return "", err
		}
	}
	bin, err := findBinary(ctx, e.workdir, ipamPlugin, "")
	if err != nil {
		return "", err
	}
	if err := os.Symlink(bin, filepath.Join(dir, ipamPlugin)); err != nil {
		return "", err
	}
	return dir, nil
}

// ipamPlugin keeps pods' addresses across reboots (cmd/sitegrid-ipam).
const ipamPlugin = "sitegrid-ipam"

// loadImage imports a user's docker-archive or OCI tarball into every real
// node, and into every real node added or rebooted later.
func (e *edge) loadImage(ctx context.Context, file string) (refs, nodes []string, err error) {
	if file == "" || !filepath.IsAbs(file) {
		return nil, nil, fmt.Errorf("load-image needs the archive's absolute path, not %q", file)
	}
	if _, err := os.Stat(file); err != nil {
		return nil, nil, err
	}
	all, err := e.resolve(nil)
	if err != nil {
		return nil, nil, err
	}
	for _, en := range all {
		if en.real == nil {
			continue
		}
		en.mu.Lock()
		running := en.containerd != nil && !exited(en.containerd)
		en.mu.Unlock()
		if !running {
			continue // it imports the image when it boots
		}
		got, err := containerd.Import(ctx, en.real.ctr.Socket(), file)
		if err != nil {
			return nil, nodes, fmt.Errorf("load %s into %s: %w", file, en.name, err)
		}
		refs = got
		nodes = append(nodes, en.name)
	}
	if refs == nil {
		return nil, nil, errors.New("the lab has no running real node to load an image into")
	}
	e.bootMu.Lock()
	for _, ref := range refs {
		e.loadedImages = append(e.loadedImages, images.Archive{Ref: ref, Path: file})
	}
	e.bootMu.Unlock()
	return refs, nodes, nil
}

func (e *edge) newRealNode(en *edgeNode, labels map[string]string) *realNode {
	return &realNode{
		labels:     labels,
		ctr:        realNodeContainerd(e.workdir, en.name),
		cgroupRoot: machine.CgroupRoot(e.workdir, en.name),
		kubeletDir: filepath.Join(en.dir, "kubelet"),
		network:    cniNetwork(e.workdir),
	}
}

// realNodeContainerd is the containerd of real node name in the lab at
// workdir (the lab's nodes live in <workdir>/controlplane/nodes/<name>).
func realNodeContainerd(workdir, name string) containerd.Config {
	dir := filepath.Join(workdir, controlPlaneDir, "nodes", name)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return containerd.Config{Dir: filepath.Join(dir, "containerd"), SandboxImage: images.Pause, CNIConfDir: filepath.Join(dir, "cni")}
}

// setUpReal writes the node's kubelet configuration and serving
// certificate, and makes its cgroup root; the host's sysctls are recorded
// first.
func (e *edge) setUpReal(ctx context.Context, en *edgeNode) error {
	r := en.real
	r.ctr.Netns = netns.Path(en.netns)
	binDir, err := e.cniPlugins(ctx)
	if err != nil {
		return err
	}
	r.ctr.CNIBinDir = binDir
	e.hostMu.Lock()
	err = machine.SaveSysctls(filepath.Join(e.workdir, sysctlsFile))
	e.hostMu.Unlock()
	if err != nil {
		return err
	}
	if err := machine.EnsureCgroups(r.cgroupRoot); err != nil {
		return err
	}
	for _, d := range []string{r.kubeletDir, r.ctr.CNIConfDir, filepath.Join(en.dir, "manifests"), filepath.Join(en.dir, "pod-logs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	serving, err := e.cp.IssueCert(pki.LeafRequest{CommonName: "system:node:" + en.name, Organizations: []string{"system:nodes"},
		IPs: []net.IP{net.ParseIP(en.ip)}, DNSNames: []string{en.name}, Server: true})
	if err != nil {
		return err
	}
	cert, key, err := pki.WriteKeyPair(en.dir, "kubelet-serving", serving.Cert, serving.Key)
	if err != nil {
		return err
	}
	cfg, err := yaml.Marshal(kubeletConfiguration(en, cert, key, e.cp.CAFile))
	if err != nil {
		return err
	}
	r.kubeletConfig = filepath.Join(en.dir, "kubelet.yaml")
	return os.WriteFile(r.kubeletConfig, cfg, 0o600)
}

// kubeletConfiguration is the node's KubeletConfiguration: production's
// authentication (client certificates of the cluster CA, bearer tokens by
// TokenReview, no anonymous access) and authorization (SubjectAccessReview),
// cgroupfs under the node's own cgroup root, and eviction thresholds a
// shared lab disk does not trip.
func kubeletConfiguration(en *edgeNode, cert, key, clientCA string) map[string]any {
	r := en.real
	return map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"address":                  en.ip,
		"port":                     kubeletPort,
		"readOnlyPort":             0,
		"healthzBindAddress":       "127.0.0.1",
		"healthzPort":              kubeletHealthzPort,
		"tlsCertFile":              cert,
		"tlsPrivateKeyFile":        key,
		"rotateCertificates":       false,
		"serverTLSBootstrap":       false,
		"authentication":           map[string]any{"anonymous": map[string]any{"enabled": false}, "webhook": map[string]any{"enabled": true, "cacheTTL": "2m"}, "x509": map[string]any{"clientCAFile": clientCA}},
		"authorization":            map[string]any{"mode": "Webhook", "webhook": map[string]any{"cacheAuthorizedTTL": "5m", "cacheUnauthorizedTTL": "30s"}},
		"containerRuntimeEndpoint": "unix://" + r.ctr.Socket(),
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               r.cgroupRoot,
		"cgroupsPerQOS":            true,
		// The machine's cgroup hierarchies are v1; Kubernetes still runs
		// on them when told to.
		"failCgroupV1":  false,
		"failSwapOn":    false,
		"staticPodPath": filepath.Join(en.dir, "manifests"),
		"podLogsDir":    filepath.Join(en.dir, "pod-logs"),
		"resolvConf":    "",
		"clusterDomain": ClusterDomain,
		// The node's own DNS (dns.go).
		"clusterDNS":   []string{en.ip},
		"evictionHard": map[string]string{"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
		// Images come from the lab's archives, not a registry: never
		// collect them.
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"nodeStatusUpdateFrequency":   "10s",
		"registerNode":                true,
	}
}

// startContainerd starts the node's containerd in its namespace and
// imports the images it does not hold yet (a rebooted node has them on its
// disk).
func (e *edge) startContainerd(ctx context.Context, en *edgeNode) error {
	p, err := containerd.Start(ctx, en.real.ctr)
	if err != nil {
		return fmt.Errorf("containerd of %s: %w", en.name, err)
	}
	en.mu.Lock()
	en.containerd = p
	en.mu.Unlock()
	archives, err := e.images(ctx)
	if err != nil {
		return err
	}
	held, err := containerd.Images(ctx, en.real.ctr.Socket())
	if err != nil {
		return fmt.Errorf("images of %s: %w", en.name, err)
	}
	have := map[string]bool{}
	for _, ref := range held {
		have[ref] = true
	}
	for _, a := range archives {
		if have[a.Ref] {
			continue
		}
		refs, err := containerd.Import(ctx, en.real.ctr.Socket(), a.Path)
		if err != nil {
			return fmt.Errorf("import %s into %s: %w", a.Ref, en.name, err)
		}
		for _, ref := range refs {
			have[ref] = true // an archive of several images is imported once
		}
	}
	return nil
}

// startRealKubelet runs the node's kubelet inside its namespace (nsenter
// --net only: the kubelet must see the mounts containerd makes).
func (en *edgeNode) startRealKubelet(ctx context.Context, bin string) error {
	args := []string{"--net=" + netns.Path(en.netns), "--", bin,
		"--config=" + en.real.kubeletConfig, "--kubeconfig=" + en.kubeletConfig,
		"--root-dir=" + en.real.kubeletDir, "--hostname-override=" + en.name, "--node-ip=" + en.ip,
		"--node-labels=" + labelList(en.real.labels), "--v=2"}
	args = append(args, en.superEdgeFeatureGates()...)
	p, err := process.Start(process.Spec{Name: "kubelet-" + en.name, Path: "nsenter", Args: args, LogFile: filepath.Join(en.dir, "kubelet.log")})
	if err != nil {
		return err
	}
	return en.adopt(ctx, p, process.HTTPReady(en.netnsClient(), "http://127.0.0.1:"+strconv.Itoa(kubeletHealthzPort)+"/healthz"), &en.kubelet)
}

// labelList is labels as --node-labels takes them, sorted.
func labelList(labels map[string]string) string {
	out := make([]string, 0, len(labels))
	for k, v := range labels {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// netnsClient is an HTTP client that dials from inside the node's
// namespace, for the health endpoints there.
func (en *edgeNode) netnsClient() *http.Client { return netnsHTTPClient(en.netns) }

// netnsHTTPClient dials from inside the network namespace ns.
func netnsHTTPClient(ns string) *http.Client {
	return &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return netns.Dial(ctx, ns, addr) },
	}}
}

// registerReal waits for the kubelet's Node, marks it as the lab's and
// publishes the hub's gossip address on it, then gives the node its pod
// network once the controller-manager allocated its podCIDR.
func (e *edge) registerReal(ctx context.Context, en *edgeNode) error {
	var node *corev1.Node
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := e.admin.CoreV1().Nodes().Get(ctx, en.name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		node = n
		return n.Spec.PodCIDR != "", nil
	})
	if err != nil {
		what := "did not register its Node"
		if node != nil {
			what = "registered, but its Node got no podCIDR"
		}
		return fmt.Errorf("kubelet of %s %s (%w):\n%s", en.name, what, err, process.LogTail(filepath.Join(en.dir, "kubelet.log"), 15))
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		realNodeMarker: "true", health.GossipAddressAnnotation: en.gossip,
	}}})
	if err != nil {
		return err
	}
	if _, err := e.admin.CoreV1().Nodes().Patch(ctx, en.name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("annotate node %s: %w", en.name, err)
	}
	en.real.podCIDR = node.Spec.PodCIDR
	if err := writeCNIConfig(en); err != nil {
		return err
	}
	return e.routeSite(ctx, en.site)
}

// cniNetwork names the lab's pod network: unique per lab on the machine,
// so the CNI plugins' host-wide caches (/var/lib/cni) tell labs apart.
func cniNetwork(workdir string) string { return netns.Name(workdir, "pods") }

// writeCNIConfig gives the node's containerd its pod network: a bridge in
// the node's namespace, addresses of the node's podCIDR; the node routes
// between pods and its LAN (other nodes' pods are routed by routeSite).
// Addresses are host-local's, kept per pod across reboots by sitegrid-ipam
// (internal/cni/stickyipam): its record is on the node's disk, host-local's
// in the runtime state a reboot drops.
func writeCNIConfig(en *edgeNode) error {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       en.real.network,
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
			"ipam": map[string]any{
				"type":      "sitegrid-ipam",
				"stateFile": filepath.Join(en.dir, "cni-ipam", "pods.json"),
				"delegate": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": en.real.podCIDR}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": filepath.Join(en.real.ctr.State(), "cni-ipam"),
				},
			},
		}, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}}},
	}
	return atomicfile.WriteJSON(filepath.Join(en.real.ctr.CNIConfDir, "10-sitegrid.conflist"), conf, 0o600)
}

// powerCut ends every process of the real node with SIGKILL (daemons,
// shims, containers) and drops what a machine loses when its power goes:
// its runtime's mounts and state (what /run would hold) and its network
// namespace's interfaces and rules. Its disks stay: the containerd and
// kubelet roots, the hub's cache.
func (en *edgeNode) powerCut(ctx context.Context) error {
	r := en.real
	kctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var errs []error
	if err := machine.Kill(kctx, netns.Path(en.netns), r.cgroupRoot); err != nil {
		errs = append(errs, err)
	}
	if err := machine.Unmount(en.dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(r.ctr.State()); err != nil {
		errs = append(errs, err)
	}
	if err := containerd.RemoveStaleShimSockets(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// tearDownReal is powerCut plus what the node's host leaves behind for
// good: its cgroups.
func (en *edgeNode) tearDownReal() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return errors.Join(en.powerCut(ctx), machine.RemoveCgroups(en.real.cgroupRoot))
}

// routeSite routes, on every real node of the site, the pod networks of
// the site's other real nodes over the LAN.
func (e *edge) routeSite(ctx context.Context, site string) error {
	e.mu.Lock()
	var nodes []*edgeNode
	for _, en := range e.nodes {
		if en.site == site && en.real != nil && en.real.podCIDR != "" && netns.Exists(en.netns) {
			nodes = append(nodes, en)
		}
	}
	e.mu.Unlock()
	var errs []error
	for _, from := range nodes {
		for _, to := range nodes {
			if from != to {
				errs = append(errs, sitenet.RoutePods(ctx, from.netns, to.real.podCIDR, net.ParseIP(to.ip)))
			}
		}
	}
	return errors.Join(errs...)
}
