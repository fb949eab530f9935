package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"sigs.k8s.io/yaml"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/hub/config"
	"github.com/sitegrid/sitegrid/internal/lab/netns"
	"github.com/sitegrid/sitegrid/internal/link"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/process"
	tunnelserver "github.com/sitegrid/sitegrid/internal/tunnel/server"
	"github.com/sitegrid/sitegrid/internal/unixsock"
)

// The lab's cloud-to-edge tunnel (docs/tunnel.md): kube-apiserver's egress
// selector sends its connections to nodes to sitegrid-tunnel over a unix
// socket, and every node's hub dials the tunnel through an uplink of its
// own that `lab partition` cuts with the apiserver's. The apiserver dials
// nodes by name, which resolves nowhere on the host: a node's kubelet is
// reached through the tunnel or not at all.
const (
	tunnelIdentity  = "system:serviceaccount:sitegrid-system:sitegrid-tunnel"
	tunnelSocket    = "tunnel.sock"
	tunnelNamespace = "sitegrid-system"
	// TunnelReplica names the lab's first tunnel replica in the tunnel's
	// Leases and its components.
	TunnelReplica = "sitegrid-tunnel-0"
	// MaxTunnelReplicas bounds --tunnel-replicas.
	MaxTunnelReplicas = 3
)

// TunnelReplicaName names replica i (from 0), as a StatefulSet would.
func TunnelReplicaName(i int) string { return "sitegrid-tunnel-" + strconv.Itoa(i) }

// tunnelService is the lab's sitegrid-tunnel replicas and, in front of
// them, what a Service is in a cluster: the apiserver's egress socket and
// metrics-server's proxy address, each relayed to the first live replica.
type tunnelService struct {
	replicas         []*tunnelServer
	egress, kubelets *link.Link
}

// tunnelServer is one running sitegrid-tunnel replica.
type tunnelServer struct {
	proc *process.Process
	// agents is where hubs connect; health serves /metrics; socket and
	// kubelets are its CONNECT endpoints (the apiserver's, and the TCP one
	// metrics-server uses as its HTTPS proxy).
	agents, health, socket, kubelets string
}

// egressSocket is the unix socket the apiserver CONNECTs to, in the control
// plane's folder.
func egressSocket(workdir string) (string, error) {
	p := filepath.Join(workdir, controlPlaneDir, tunnelSocket)
	return p, unixsock.CheckPath(p)
}

// startTunnels runs n replicas and the relays in front of them; egress is
// the socket the apiserver's egress configuration names.
func startTunnels(ctx context.Context, cp *controlplane.ControlPlane, bin, egress string, n int) (_ *tunnelService, err error) {
	ts := &tunnelService{}
	defer func() {
		if err != nil {
			ts.stop()
		}
	}()
	for i := range n {
		r, err := startTunnel(ctx, cp, bin, i)
		if err != nil {
			return nil, err
		}
		ts.replicas = append(ts.replicas, r)
	}
	el, err := unixsock.Listen(egress)
	if err != nil {
		return nil, err
	}
	ts.egress = link.ServeDial(el, func() (net.Conn, error) {
		return ts.firstLive(func(r *tunnelServer) (string, string) { return "unix", r.socket })
	})
	kl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ts.kubelets = link.ServeDial(kl, func() (net.Conn, error) {
		return ts.firstLive(func(r *tunnelServer) (string, string) { return "tcp", r.kubelets })
	})
	return ts, nil
}

// firstLive dials the first replica that answers at the endpoint at picks.
func (ts *tunnelService) firstLive(at func(*tunnelServer) (network, addr string)) (net.Conn, error) {
	var errs []error
	for _, r := range ts.replicas {
		network, addr := at(r)
		c, err := net.DialTimeout(network, addr, 5*time.Second)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// agents is every replica's agent address.
func (ts *tunnelService) agents() []string {
	out := make([]string, len(ts.replicas))
	for i, r := range ts.replicas {
		out[i] = r.agents
	}
	return out
}

func (ts *tunnelService) stop() {
	for _, l := range []*link.Link{ts.egress, ts.kubelets} {
		if l != nil {
			l.Close()
		}
	}
	for _, r := range ts.replicas {
		r.proc.Stop(10 * time.Second)
	}
}

// startTunnel runs replica i of sitegrid-tunnel with the permissions
// config/rbac gives it, serving agents on loopback with a certificate of
// the cluster CA, which it also forwards to its peers with.
func startTunnel(ctx context.Context, cp *controlplane.ControlPlane, bin string, i int) (*tunnelServer, error) {
	name := TunnelReplicaName(i)
	kc, err := cp.WriteKubeconfig(name, tunnelIdentity, "system:serviceaccounts", "system:serviceaccounts:sitegrid-system")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cp.Dir, "tunnel")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	serving, err := cp.IssueCert(pki.LeafRequest{CommonName: "sitegrid-tunnel", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Client: true})
	if err != nil {
		return nil, err
	}
	certFile, keyFile, err := pki.WriteKeyPair(dir, name, serving.Cert, serving.Key)
	if err != nil {
		return nil, err
	}
	socket := filepath.Join(dir, name+".sock")
	if err := unixsock.CheckPath(socket); err != nil {
		return nil, err
	}
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = controlplane.FreePort(); err != nil {
			return nil, err
		}
	}
	at := func(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
	ts := &tunnelServer{agents: at(ports[0]), health: at(ports[1]), kubelets: at(ports[2]), socket: socket}
	ts.proc, err = process.Start(process.Spec{Name: name, Path: bin, LogFile: filepath.Join(cp.Dir, "logs", name+".log"), Args: []string{
		"--kubeconfig=" + kc, "--namespace=sitegrid-system", "--replica=" + name,
		"--agent-address=" + ts.agents, "--health-address=" + ts.health,
		"--tls-cert-file=" + certFile, "--tls-private-key-file=" + keyFile, "--node-client-ca-file=" + cp.CAFile,
		"--connect-socket=" + socket,
		// Over TCP, metrics-server only, and to kubelets only.
		"--connect-address=" + ts.kubelets, "--connect-client-ca-file=" + cp.CAFile,
		"--connect-client-names=", "--kubelet-client-names=" + metricsServerUser,
		"--peer-address=" + at(ports[3]),
		// What is no node is dialled directly, as in a cluster: here, the
		// cloud's components on loopback (metrics-server's API).
		"--direct=true",
	}})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := ts.proc.WaitReady(wctx, 100*time.Millisecond, process.HTTPReady(nil, "http://"+ts.health+"/readyz")); err != nil {
		ts.proc.Stop(5 * time.Second)
		return nil, fmt.Errorf("%s did not become ready (%w):\n%s", name, err, process.LogTail(ts.proc.Spec.LogFile, 15))
	}
	return ts, nil
}

// tunnelStates is each node's tunnel as the tunnel server recorded it in
// the nodes' Leases: the replica holding its session, or "disconnected";
// a node the tunnel never carried is absent.
func (e *edge) tunnelStates(ctx context.Context) map[string]string {
	leases, err := e.admin.CoordinationV1().Leases(tunnelNamespace).List(ctx, metav1.ListOptions{LabelSelector: tunnelserver.NodeLabel})
	if err != nil {
		return nil
	}
	states := map[string]string{}
	for _, le := range leases.Items {
		state := ptr.Deref(le.Spec.HolderIdentity, "")
		if state == "" {
			state = "disconnected"
		}
		states[le.Labels[tunnelserver.NodeLabel]] = state
	}
	return states
}

// linkTunnel opens the node's tunnel uplink and, on a real node, the relay
// its hub reaches the kubelet by: on a real machine the hub runs on the
// node and dials the kubelet itself; here it runs beside the node's network
// namespace, which only this relay enters.
func (en *edgeNode) linkTunnel(agents []string, turn int) error {
	// Each node has its own first replica, as a Service spreads them.
	for j := range agents {
		l, err := link.Listen("127.0.0.1:0", agents[(turn+j)%len(agents)])
		if err != nil {
			return fmt.Errorf("tunnel uplink of %s: %w", en.name, err)
		}
		en.tunnelLinks = append(en.tunnelLinks, l)
	}
	if en.real == nil {
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("kubelet relay of %s: %w", en.name, err)
	}
	kubelet := net.JoinHostPort(en.ip, strconv.Itoa(kubeletPort))
	en.kubeletRelay = link.ServeDial(ln, func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return netns.Dial(ctx, en.netns, kubelet)
	})
	return nil
}

// tunnelKubelet points the node's hub agent at its kubelet: a real node's
// through the relay into its namespace; a kwok node's at its kwok, which
// then serves the kubelet API over HTTPS with a serving certificate of
// system:node:<node>, as a kubelet does: logs and attach from a file of the
// node's, exec of commands on the lab's machine (as nobody when the lab
// runs as root), port-forward to the node's hub's health port.
func (e *edge) tunnelKubelet(en *edgeNode, hubCfg *config.HubConfiguration) error {
	hubCfg.Tunnel = config.Tunnel{}
	for _, l := range en.tunnelLinks {
		hubCfg.Tunnel.Servers = append(hubCfg.Tunnel.Servers, l.Addr())
	}
	if en.real != nil {
		hubCfg.Tunnel.KubeletAddress, hubCfg.Tunnel.KubeletPort = en.kubeletRelay.Addr(), kubeletPort
		return nil
	}
	port, err := controlplane.FreePort()
	if err != nil {
		return err
	}
	hubCfg.Tunnel.KubeletAddress, hubCfg.Tunnel.KubeletPort = "127.0.0.1:"+strconv.Itoa(port), port
	serving, err := e.cp.IssueCert(pki.LeafRequest{CommonName: "system:node:" + en.name, Organizations: []string{"system:nodes"},
		DNSNames: []string{en.name}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	if err != nil {
		return err
	}
	certFile, keyFile, err := pki.WriteKeyPair(en.dir, "kwok-serving", serving.Cert, serving.Key)
	if err != nil {
		return err
	}
	// The log in the CRI format a kubelet reads its containers' logs in.
	logFile := filepath.Join(en.dir, "kwok-pod.log")
	line := fmt.Sprintf("%s stdout F simulated container on %s (kwok): its log is %s\n", time.Now().UTC().Format(time.RFC3339Nano), en.name, logFile)
	if err := os.WriteFile(logFile, []byte(line), 0o644); err != nil {
		return err
	}
	// Commands run where kwok runs, with no working folder of their own.
	local := map[string]any{}
	if os.Geteuid() == 0 {
		nobody := 65534
		local["securityContext"] = map[string]any{"runAsUser": nobody, "runAsGroup": nobody}
	}
	_, healthPort, _ := net.SplitHostPort(en.hubHealth)
	hp, _ := strconv.Atoi(healthPort)
	docs := []map[string]any{
		{"kind": "ClusterLogs", "spec": map[string]any{"logs": []any{map[string]any{"logsFile": logFile, "follow": true}}}},
		{"kind": "ClusterAttach", "spec": map[string]any{"attaches": []any{map[string]any{"logsFile": logFile}}}},
		{"kind": "ClusterExec", "spec": map[string]any{"execs": []any{map[string]any{"local": local}}}},
		{"kind": "ClusterPortForward", "spec": map[string]any{"forwards": []any{map[string]any{"target": map[string]any{"address": "127.0.0.1", "port": hp}}}}},
	}
	var out []byte
	for i, d := range docs {
		d["apiVersion"] = "kwok.x-k8s.io/v1alpha1"
		d["metadata"] = map[string]any{"name": "sitegrid-lab"}
		b, err := yaml.Marshal(d)
		if err != nil {
			return err
		}
		if i > 0 {
			out = append(out, []byte("---\n")...)
		}
		out = append(out, b...)
	}
	configFile := filepath.Join(en.dir, "kwok-kubelet.yaml")
	if err := os.WriteFile(configFile, out, 0o600); err != nil {
		return err
	}
	en.kwokServing = &controlplane.KwokServing{Port: port, CertFile: certFile, KeyFile: keyFile, Configs: []string{configFile}}
	return nil
}
