package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/health"
	"github.com/sitegrid/sitegrid/internal/hub/config"
	"github.com/sitegrid/sitegrid/internal/lab/images"
	"github.com/sitegrid/sitegrid/internal/link"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/process"
	"github.com/sitegrid/sitegrid/internal/rbac/hubrbac"
)

// Every lab node is an edge node as the hub issue describes it: its kubelet
// (a kwok managing only that node, with the node's own credential) talks to
// the node's sitegrid-hub, and the hub reaches the cloud apiserver only
// through the node's uplink, a link the lab can cut.

// The lab's user behind `lab kubeconfig --via-hub`: a ServiceAccount bound to
// cluster-admin, whose token the hubs pass through.
const (
	labUserNamespace = "sitegrid-system"
	labUser          = "lab-admin"
	// labUserTokenTTL bounds the token; a lab running longer needs a restart.
	labUserTokenTTL = 30 * 24 * time.Hour
)

// kwokReaderRBAC is what kwok needs beyond a kubelet's permissions: at start
// it lists Nodes (any one, to see the apiserver answer), and it lists and
// watches Leases where a kubelet only gets and updates its own. Reads only,
// bound to the simulated kubelets' group in the lab; writes stay confined by
// the Node authorizer and NodeRestriction.
func kwokReaderRBAC() (*rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding) {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "sitegrid-lab:kwok-reader"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:nodes"}},
	}
	return role, binding
}

// edge runs the lab's edge nodes.
type edge struct {
	cp        *controlplane.ControlPlane
	admin     kubernetes.Interface
	workdir   string
	hubBin    string
	userToken string
	// kubeProxyBin is the kube-proxy every node with a network namespace
	// of its own runs (kubeproxy.go): every node with kubeProxyAll, and
	// every real node.
	kubeProxyBin   string
	kubeProxyAll   bool
	kubeProxyToken string
	// tunnelAgents are the tunnel replicas' agent addresses (tunnel.go);
	// tunnelTurn counts the nodes given them, to spread them.
	tunnelAgents []string
	tunnelTurn   atomic.Int64
	real         realOptions
	superEdge    superEdgeOptions
	// apiserver is host:port of the cloud apiserver, what links relay to.
	apiserver string

	mu    sync.Mutex
	nodes map[string]*edgeNode

	hostMu sync.Mutex // host-wide changes: site LANs, the sysctl record
	// bootMu guards what the first real node makes for all: the lab's
	// images and its CNI plugin folder; loadedImages come from
	// `lab load-image`.
	bootMu                  sync.Mutex
	labImages, loadedImages []images.Archive
	// dnsBin and dnsToken are the real nodes' DNS's binary and
	// credential (bootMu); resolvers the sites' resolvers (hostMu).
	dnsBin, dnsToken string
	resolvers        map[string]*process.Process
}

// edgeNode is one simulated edge node: its uplink, hub and kubelet.
type edgeNode struct {
	name, site, ip string
	dir            string
	link           *link.Link
	// tunnelLinks carry the hub's tunnel session to each tunnel replica;
	// they are cut and healed with link. kubeletRelay is where the hub,
	// which runs beside the node's namespace, reaches the node's kubelet
	// in it (tunnel.go).
	tunnelLinks   []*link.Link
	kubeletRelay  *link.Link
	hubConfig     string
	hubAPI        string // host:port the node's components talk to
	hubHealth     string
	gossip        string // where the hub gossips with its unit
	kubeletConfig string
	viaHubConfig  string
	// ownNetwork: the node has a network namespace of its own and runs
	// kube-proxy in it; netns is that namespace, hubRelays relay the hub's
	// addresses inside it to the hub.
	ownNetwork      bool
	netns           string
	hubRelays       []*link.Link
	kubeProxyConfig string
	// kubeProxyKubeconfig is written once: a joined node's points at its
	// hub, and reboots keep it so.
	kubeProxyKubeconfig string

	// real is set on a real node (realnode.go).
	real *realNode
	// kwokServing, on a kwok node of a lab with the tunnel, is how its kwok
	// serves the kubelet API (tunnel.go).
	kwokServing *controlplane.KwokServing

	mu                                       sync.Mutex
	hub, kubelet, kubeProxy, containerd, dns *process.Process
	// liteAPIServer is SuperEdge's edge agent on a real node of a lab with
	// --superedge-agents, until it joins (superedge.go).
	liteAPIServer *process.Process
	restarts      map[string]int
	stopping      bool
	// off: powered off by `lab stop-node`; nothing is restarted.
	off  bool
	done chan struct{}
}

// edgeOptions are the lab-wide settings of its edge nodes.
type edgeOptions struct {
	workdir string
	hubBin  string
	// kubeProxyBin is kube-proxy; kubeProxyAll runs it on every node.
	kubeProxyBin string
	kubeProxyAll bool
	real         realOptions
	// superEdge, when enabled, boots real nodes on SuperEdge's agents
	// (superedge.go).
	superEdge superEdgeOptions
	// tunnelAgents is where the tunnel replicas take agents (none: no
	// tunnel).
	tunnelAgents []string
}

func newEdge(ctx context.Context, cp *controlplane.ControlPlane, opts edgeOptions) (*edge, error) {
	admin, err := cp.Clientset()
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(cp.Endpoint)
	if err != nil {
		return nil, err
	}
	e := &edge{cp: cp, admin: admin, workdir: opts.workdir, hubBin: opts.hubBin, kubeProxyBin: opts.kubeProxyBin,
		kubeProxyAll: opts.kubeProxyAll, real: opts.real, superEdge: opts.superEdge, apiserver: u.Host, nodes: map[string]*edgeNode{},
		tunnelAgents: opts.tunnelAgents}
	role, binding := kwokReaderRBAC()
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create ClusterRole %s: %w", role.Name, err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create ClusterRoleBinding %s: %w", binding.Name, err)
	}
	if e.userToken, err = e.serviceAccountToken(ctx, labUserNamespace, labUser, "cluster-admin"); err != nil {
		return nil, err
	}
	if e.kubeProxyBin != "" {
		// kube-proxy's identity, as kubeadm sets it up.
		if e.kubeProxyToken, err = e.serviceAccountToken(ctx, kubeProxyNamespace, kubeProxyUser, "system:node-proxier"); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// serviceAccountToken creates (or finds) ServiceAccount namespace/name,
// binds it to clusterRole, and returns a token for it valid labUserTokenTTL.
func (e *edge) serviceAccountToken(ctx context.Context, namespace, name, clusterRole string) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := e.admin.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create ServiceAccount %s/%s: %w", namespace, name, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "sitegrid-lab:" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: namespace}},
	}
	if _, err := e.admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create ClusterRoleBinding %s: %w", binding.Name, err)
	}
	ttl := int64(labUserTokenTTL / time.Second)
	tr, err := e.admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// add starts an edge node's link and hub, registers the node, and starts
// its kubelet (and kube-proxy); real makes it a real node. On failure
// nothing of the node is left.
func (e *edge) add(ctx context.Context, n controlplane.Node, site string, real bool) (err error) {
	e.mu.Lock()
	if _, ok := e.nodes[n.Name]; ok {
		e.mu.Unlock()
		return fmt.Errorf("node %s already exists", n.Name)
	}
	if real && e.realNodes() >= MaxRealNodes {
		e.mu.Unlock()
		return fmt.Errorf("the lab runs at most %d real nodes (docs/lab.md: what a 2-core machine holds)", MaxRealNodes)
	}
	en := &edgeNode{name: n.Name, site: site, ip: n.InternalIP, dir: filepath.Join(e.cp.Dir, "nodes", n.Name), restarts: map[string]int{}, done: make(chan struct{}),
		ownNetwork: e.kubeProxyAll || real}
	if real {
		en.real = e.newRealNode(en, n.Labels)
	}
	e.nodes[n.Name] = en
	e.mu.Unlock()
	defer func() {
		if err != nil {
			e.mu.Lock()
			delete(e.nodes, n.Name)
			e.mu.Unlock()
			en.stop()
			_ = os.RemoveAll(en.dir)
		}
	}()
	if err := n.Validate(); err != nil {
		return err
	}
	if real {
		// Judged where the node runs: the lab owner's machine and rights.
		if err := RealNodesAvailable(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(en.dir, 0o700); err != nil {
		return err
	}
	if en.link, err = link.Listen("127.0.0.1:0", e.apiserver); err != nil {
		return fmt.Errorf("uplink of %s: %w", n.Name, err)
	}
	if len(e.tunnelAgents) > 0 {
		if err := en.linkTunnel(e.tunnelAgents, int(e.tunnelTurn.Add(1)-1)); err != nil {
			return err
		}
	}
	if real {
		// A real node boots talking to the cloud directly, then joins
		// through sitegrid-hub join (join.go).
		if err := e.writeHubConfig(ctx, en); err != nil {
			return err
		}
		if err := e.setUpKubeProxy(ctx, en); err != nil {
			return err
		}
		if err := e.bootReal(ctx, en); err != nil {
			return err
		}
		go en.supervise(e)
		return nil
	}
	// The hub's ports are picked free, but another process may take one
	// before the hub binds it: then it gets new ones.
	for attempt := 1; ; attempt++ {
		if err := e.writeHubConfig(ctx, en); err != nil {
			return err
		}
		err := en.startHub(ctx, e.hubBin)
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return err
		}
		klog.InfoS("a port of the hub was taken; trying others", "node", en.name, "err", err)
	}
	if en.ownNetwork {
		if err := e.setUpKubeProxy(ctx, en); err != nil {
			return err
		}
	}
	n.OwnKubelet = true
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations[health.GossipAddressAnnotation] = en.gossip
	if err := controlplane.CreateNode(ctx, e.admin, n); err != nil {
		return err
	}
	if err := en.startKwok(ctx, e.cp); err != nil {
		_ = e.admin.CoreV1().Nodes().Delete(context.Background(), n.Name, metav1.DeleteOptions{})
		return err
	}
	if en.ownNetwork {
		if err := en.startKubeProxy(ctx, e.kubeProxyBin); err != nil {
			_ = e.admin.CoreV1().Nodes().Delete(context.Background(), n.Name, metav1.DeleteOptions{})
			return err
		}
	}
	go en.supervise(e)
	return nil
}

// realNodes counts the lab's real nodes; e.mu is held.
func (e *edge) realNodes() int {
	n := 0
	for _, en := range e.nodes {
		if en.real != nil {
			n++
		}
	}
	return n
}

// writeHubConfig picks the hub's ports and writes its configuration and
// the kubeconfigs of the node's kubelet and of `lab kubeconfig --via-hub`.
// A kwok node's hub gets certificates the lab issues and RBAC the lab
// grants; a real node's hub gets a base configuration that `sitegrid-hub
// join` completes (join.go), and its kubelet a kubeconfig of the cloud
// itself, as a node has before it joins.
func (e *edge) writeHubConfig(ctx context.Context, en *edgeNode) error {
	ports := make([]int, 3)
	for i := range ports {
		var err error
		if ports[i], err = controlplane.FreePort(); err != nil {
			return err
		}
	}
	en.hubAPI = "127.0.0.1:" + strconv.Itoa(ports[0])
	en.hubHealth = "127.0.0.1:" + strconv.Itoa(ports[1])
	en.gossip = "127.0.0.1:" + strconv.Itoa(ports[2])
	hubCfg := config.HubConfiguration{TypeMeta: config.TypeMeta,
		NodeName: en.name, ListenAddress: en.hubAPI, HealthAddress: en.hubHealth,
		CachePath:     filepath.Join(en.dir, "cache", "cache.db"),
		ProbeInterval: metav1.Duration{Duration: time.Second},
		// The unit's hubs gossip on the host's loopback (the lab's site
		// LAN), each at the address its Node's annotation names.
		Health: config.Health{UnitKey: GroupName, BindAddress: en.gossip, ReportInterval: metav1.Duration{Duration: 2 * time.Second}},
	}
	if len(en.tunnelLinks) > 0 {
		if err := e.tunnelKubelet(en, &hubCfg); err != nil {
			return err
		}
	}
	hubURL := "https://" + en.hubAPI
	var err error
	if en.viaHubConfig, err = e.cp.WriteTokenKubeconfig("via-hub-"+en.name, hubURL, e.userToken); err != nil {
		return err
	}
	kubeletServer := hubURL
	if en.real != nil {
		kubeletServer = en.cloudURL()
		en.hubConfig = filepath.Join(en.joinRoot(), "etc", "sitegrid", "hub.yaml")
		en.real.hubBase = filepath.Join(en.dir, "hub-base.yaml")
		if err := writeYAML(en.real.hubBase, hubCfg); err != nil {
			return err
		}
	} else if err := e.issueHubCredentials(ctx, en, &hubCfg); err != nil {
		return err
	}
	en.kubeletConfig, err = e.cp.WriteKubeconfigAt("kubelet-"+en.name, kubeletServer, "system:node:"+en.name, "system:nodes")
	return err
}

// issueHubCredentials grants a kwok node's hub credential what
// hubrbac.Cluster allows and issues its certificates from the lab's CA,
// and writes its configuration.
func (e *edge) issueHubCredentials(ctx context.Context, en *edgeNode, hubCfg *config.HubConfiguration) error {
	if err := hubrbac.Grant(ctx, e.admin, en.name); err != nil {
		return err
	}
	servingIPs, servingNames := []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"}
	if en.ownNetwork {
		// The node's in-cluster clients reach it as the kubernetes Service
		// (kubeproxy.go), and verify it as they would the apiserver.
		servingIPs = append(servingIPs, net.ParseIP(en.ip), net.ParseIP(controlplane.KubernetesServiceIP))
		servingNames = append(servingNames, controlplane.KubernetesServiceNames...)
		hubCfg.ServiceTopology.KubernetesEndpoint = en.nodeHubAddr()
	}
	serving, err := e.cp.IssueCert(pki.LeafRequest{CommonName: hubrbac.User(en.name), IPs: servingIPs, DNSNames: servingNames, Server: true})
	if err != nil {
		return err
	}
	cred, err := e.cp.IssueCert(pki.LeafRequest{CommonName: hubrbac.User(en.name), Client: true})
	if err != nil {
		return err
	}
	if hubCfg.ServingCertFile, hubCfg.ServingKeyFile, err = pki.WriteKeyPair(en.dir, "hub-serving", serving.Cert, serving.Key); err != nil {
		return err
	}
	if hubCfg.ClientCertFile, hubCfg.ClientKeyFile, err = pki.WriteKeyPair(en.dir, "hub-client", cred.Cert, cred.Key); err != nil {
		return err
	}
	// The node's hub reaches the cloud through the node's uplink only.
	hubCfg.Servers, hubCfg.ServerCAFile, hubCfg.ClientCAFile = []string{en.cloudURL()}, e.cp.CAFile, e.cp.CAFile
	en.hubConfig = filepath.Join(en.dir, "hub.yaml")
	return writeYAML(en.hubConfig, *hubCfg)
}

// cloudURL is the cloud apiserver as the node reaches it: its uplink.
func (en *edgeNode) cloudURL() string { return "https://" + en.link.Addr() }

func writeYAML(path string, v any) error {
	data, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

func (en *edgeNode) startHub(ctx context.Context, bin string) error {
	p, err := process.Start(process.Spec{Name: "sitegrid-hub-" + en.name, Path: bin, Args: []string{"--config", en.hubConfig},
		LogFile: filepath.Join(en.dir, "hub.log")})
	if err != nil {
		return err
	}
	return en.adopt(ctx, p, process.HTTPReady(nil, "http://"+en.hubHealth+"/readyz"), &en.hub)
}

// adopt waits (a minute at most) until a started process of the node
// passes ready and keeps it in slot; a process that does not is stopped,
// and the error carries the tail of its log.
func (en *edgeNode) adopt(ctx context.Context, p *process.Process, ready func(context.Context) error, slot **process.Process) error {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := p.WaitReady(wctx, 100*time.Millisecond, ready); err != nil {
		p.Stop(5 * time.Second)
		return fmt.Errorf("%s did not become ready (%w):\n%s", p.Spec.Name, err, process.LogTail(p.Spec.LogFile, 15))
	}
	en.mu.Lock()
	*slot = p
	en.mu.Unlock()
	return nil
}

// startKubelet starts the node's kubelet: the real one on a real node,
// else its kwok.
func (e *edge) startKubelet(ctx context.Context, en *edgeNode) error {
	if en.real != nil {
		return en.startRealKubelet(ctx, e.real.kubeletBin)
	}
	return en.startKwok(ctx, e.cp)
}

func (en *edgeNode) startKwok(ctx context.Context, cp *controlplane.ControlPlane) error {
	var p *process.Process
	var err error
	if en.kwokServing != nil {
		p, err = cp.StartNodeKwokServing(ctx, en.name, en.kubeletConfig, *en.kwokServing)
	} else {
		p, err = cp.StartNodeKwokVia(ctx, en.name, en.kubeletConfig)
	}
	if err != nil {
		return fmt.Errorf("kubelet (kwok) of %s: %w\n%s", en.name, err, process.LogTail(filepath.Join(cp.Dir, "logs", "kwok-"+en.name+".log"), 15))
	}
	en.mu.Lock()
	en.kubelet = p
	en.mu.Unlock()
	return nil
}

// supervise restarts the node's hub, kubelet or kube-proxy when it exits,
// as systemd or the kubelet would on a real node: killing a hub is how a
// test (or a user) sees it come back and serve from its cache.
func (en *edgeNode) supervise(e *edge) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-en.done:
			return
		case <-tick.C:
		}
		en.mu.Lock()
		hubGone, kubeletGone, kubeProxyGone := exited(en.hub), exited(en.kubelet), exited(en.kubeProxy)
		containerdGone, dnsGone := exited(en.containerd), exited(en.dns)
		superEdgeGone := exited(en.liteAPIServer)
		off := en.off
		en.mu.Unlock()
		if off {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if containerdGone {
			en.countRestart("containerd")
			klog.InfoS("restarting containerd", "node", en.name)
			if err := e.startContainerd(ctx, en); err != nil {
				klog.ErrorS(err, "restart containerd", "node", en.name)
			}
		}
		if superEdgeGone {
			en.countRestart("superedge")
			klog.InfoS("restarting lite-apiserver", "node", en.name)
			if err := e.startSuperEdge(ctx, en); err != nil {
				klog.ErrorS(err, "restart lite-apiserver", "node", en.name)
			}
		}
		if hubGone {
			en.countRestart("hub")
			klog.InfoS("restarting sitegrid-hub", "node", en.name)
			if err := en.startHub(ctx, e.hubBin); err != nil {
				klog.ErrorS(err, "restart sitegrid-hub", "node", en.name)
			}
		}
		if kubeletGone {
			en.countRestart("kubelet")
			klog.InfoS("restarting kubelet", "node", en.name)
			if err := e.startKubelet(ctx, en); err != nil {
				klog.ErrorS(err, "restart kubelet", "node", en.name)
			}
		}
		if dnsGone {
			en.countRestart("dns")
			klog.InfoS("restarting sitegrid-dns", "node", en.name)
			if err := en.startDNS(ctx, e.dnsBin); err != nil {
				klog.ErrorS(err, "restart sitegrid-dns", "node", en.name)
			}
		}
		if kubeProxyGone {
			en.countRestart("kube-proxy")
			klog.InfoS("restarting kube-proxy", "node", en.name)
			if err := en.startKubeProxy(ctx, e.kubeProxyBin); err != nil {
				klog.ErrorS(err, "restart kube-proxy", "node", en.name)
			}
		}
		cancel()
	}
}

func exited(p *process.Process) bool {
	if p == nil {
		return false
	}
	done, _ := p.Exited()
	return done
}

func (en *edgeNode) countRestart(what string) {
	en.mu.Lock()
	defer en.mu.Unlock()
	en.restarts[what]++
}

// stop ends the node's processes, its namespace and its link.
func (en *edgeNode) stop() {
	en.mu.Lock()
	if !en.stopping {
		en.stopping = true
		close(en.done)
	}
	hub, kubelet, kubeProxy, dns := en.hub, en.kubelet, en.kubeProxy, en.dns
	en.mu.Unlock()
	if dns != nil {
		dns.Stop(5 * time.Second)
	}
	en.stopSuperEdge()
	if en.real != nil {
		// Its containers go with it: all the node's processes, its mounts
		// and cgroups.
		if err := en.tearDownReal(); err != nil {
			klog.ErrorS(err, "clean up after the real node", "node", en.name)
		}
	}
	if kubeProxy != nil {
		kubeProxy.Stop(10 * time.Second)
	}
	if err := en.tearDownKubeProxy(); err != nil {
		klog.ErrorS(err, "remove the node's network namespace", "node", en.name)
	}
	if kubelet != nil {
		kubelet.Stop(10 * time.Second)
	}
	if hub != nil {
		hub.Stop(10 * time.Second)
	}
	for _, l := range append([]*link.Link{en.kubeletRelay}, en.tunnelLinks...) {
		if l != nil {
			l.Close()
		}
	}
	if en.link != nil {
		en.link.Close()
	}
}

// remove stops a node and deletes it from the cluster.
func (e *edge) remove(ctx context.Context, name string) error {
	e.mu.Lock()
	en, ok := e.nodes[name]
	if ok {
		delete(e.nodes, name)
	}
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("node %s is not a lab node", name)
	}
	en.stop()
	if en.real != nil {
		// Registered by its kubelet, marked by the lab (realNodeMarker).
		if err := e.admin.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	} else if err := controlplane.DeleteNode(ctx, e.admin, name); err != nil {
		return err
	}
	if err := hubrbac.Revoke(ctx, e.admin, name); err != nil {
		return err
	}
	return os.RemoveAll(en.dir)
}

// stopAll stops every node's processes (the cluster is going away too).
func (e *edge) stopAll() {
	e.mu.Lock()
	nodes := make([]*edgeNode, 0, len(e.nodes))
	for _, en := range e.nodes {
		nodes = append(nodes, en)
	}
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, en := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); en.stop() }()
	}
	wg.Wait()
	e.hostMu.Lock()
	defer e.hostMu.Unlock()
	for _, p := range e.resolvers {
		p.Stop(5 * time.Second)
	}
}

// resolve turns NODE and SITE names into nodes; none means every node.
func (e *edge) resolve(targets []string) ([]*edgeNode, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*edgeNode
	seen := map[string]bool{}
	addNode := func(en *edgeNode) {
		if !seen[en.name] {
			seen[en.name] = true
			out = append(out, en)
		}
	}
	if len(targets) == 0 {
		for _, en := range e.nodes {
			addNode(en)
		}
	}
	for _, t := range targets {
		if en, ok := e.nodes[t]; ok {
			addNode(en)
			continue
		}
		found := false
		for _, en := range e.nodes {
			if en.site == t {
				addNode(en)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("%q is neither a lab node nor a site with nodes", t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// setLinks cuts or heals the uplinks of targets and returns the nodes whose
// uplink changed.
func (e *edge) setLinks(targets []string, cut bool) ([]string, error) {
	nodes, err := e.resolve(targets)
	if err != nil {
		return nil, err
	}
	// Only the nodes whose link changes are reported.
	names := make([]string, 0, len(nodes))
	for _, en := range nodes {
		if en.link.IsCut() == cut {
			continue
		}
		for _, l := range append([]*link.Link{en.link}, en.tunnelLinks...) {
			switch {
			case l == nil:
			case cut:
				l.Cut()
			default:
				l.Heal()
			}
		}
		names = append(names, en.name)
	}
	return names, nil
}

// setPower powers targets off (on false) or on and returns the nodes whose
// power changed.
func (e *edge) setPower(ctx context.Context, targets []string, on bool) ([]string, error) {
	nodes, err := e.resolve(targets)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, en := range nodes {
		en.mu.Lock()
		changed := en.off == on
		en.off = !on
		en.mu.Unlock()
		if !changed {
			continue
		}
		names = append(names, en.name)
		if !on {
			en.powerOff(ctx)
			continue
		}
		if err := e.powerOn(ctx, en); err != nil {
			return names, err
		}
	}
	return names, nil
}

// NodeStatus is an edge node as `lab status` shows it.
type NodeStatus struct {
	Name string `json:"name"`
	Site string `json:"site"`
	IP   string `json:"ip"`
	// Link is "up" or "cut".
	Link string `json:"link"`
	// Power is "on", or "off" after `lab stop-node`.
	Power string `json:"power"`
	// Hub is the hub's view of the cloud: "online", "offline", "down" when
	// the hub does not answer, or "none" on a real node that left.
	Hub        string `json:"hub"`
	HubAddress string `json:"hubAddress"`
	HubPID     int    `json:"hubPID"`
	KubeletPID int    `json:"kubeletPID"`
	// KubeProxyPID and Netns are set when the lab runs kube-proxy: its pid
	// and the node's network namespace (`ip netns exec NETNS iptables-save`
	// shows the node's rules).
	KubeProxyPID int `json:"kubeProxyPID,omitempty"`
	// Real nodes: the kubelet is the real one; ContainerdSocket is its
	// runtime's (ctr --address SOCKET -n k8s.io ...).
	Real bool `json:"real,omitempty"`
	// Joined: the real node joined through sitegrid-hub join.
	Joined bool `json:"joined,omitempty"`
	// SuperEdge is, on a node that booted on SuperEdge's lite-apiserver,
	// its state: "running", "stopped", or "replaced by sitegrid-hub";
	// LiteAPIServerPID its pid while it runs.
	SuperEdge        string         `json:"superEdge,omitempty"`
	LiteAPIServerPID int            `json:"liteAPIServerPID,omitempty"`
	ContainerdSocket string         `json:"containerdSocket,omitempty"`
	Netns            string         `json:"netns,omitempty"`
	Restarts         map[string]int `json:"restarts,omitempty"`
	ViaHubKubeconfig string         `json:"viaHubKubeconfig"`
	HubLog           string         `json:"hubLog"`
	// Tunnel is the tunnel server's view of the node: the replica holding
	// its session, "disconnected", or "" for a node the tunnel does not
	// carry.
	Tunnel string `json:"tunnel,omitempty"`
}

func (e *edge) status(ctx context.Context) []NodeStatus {
	nodes, _ := e.resolve(nil)
	out := make([]NodeStatus, len(nodes))
	tunnels := e.tunnelStates(ctx)
	var wg sync.WaitGroup
	for i, en := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = en.status(ctx)
			out[i].Tunnel = tunnels[en.name]
		}()
	}
	wg.Wait()
	return out
}

func (en *edgeNode) status(ctx context.Context) NodeStatus {
	en.mu.Lock()
	s := NodeStatus{Name: en.name, Site: en.site, IP: en.ip, Link: "up", Power: "on", HubAddress: en.hubAPI,
		ViaHubKubeconfig: en.viaHubConfig, HubLog: filepath.Join(en.dir, "hub.log"), Restarts: map[string]int{}}
	for k, v := range en.restarts {
		s.Restarts[k] = v
	}
	if en.hub != nil {
		s.HubPID = en.hub.PID()
	}
	if en.kubelet != nil {
		s.KubeletPID = en.kubelet.PID()
	}
	if en.kubeProxy != nil {
		s.KubeProxyPID = en.kubeProxy.PID()
	}
	if en.liteAPIServer != nil {
		s.LiteAPIServerPID = en.liteAPIServer.PID()
	}
	s.Netns = en.netns
	joinedReal := false
	if en.real != nil {
		s.Real, s.ContainerdSocket, s.Joined = true, en.real.ctr.Socket(), en.real.joined
		joinedReal = en.real.joined
	}
	if en.off {
		s.Power = "off"
	}
	en.mu.Unlock()
	s.SuperEdge = en.superEdgeAgentState()
	if en.link.IsCut() {
		s.Link = "cut"
	}
	s.Hub = hubView(ctx, en.hubHealth)
	if s.Real && !joinedReal {
		s.Hub = "none" // the node has left (or not joined yet): no hub
	}
	return s
}

// hubView asks a hub's /readyz whether it sees the cloud.
func hubView(ctx context.Context, addr string) string {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "down"
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	switch {
	case resp.StatusCode != http.StatusOK:
		return "down"
	case strings.HasPrefix(string(body), "ok: online"):
		return "online"
	default:
		return "offline"
	}
}
