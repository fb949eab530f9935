package lab

import (
	"context"
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
	// TunnelReplica names the lab's tunnel server in the tunnel's Leases.
	TunnelReplica = "sitegrid-tunnel-0"
)

// tunnelServer is the lab's running sitegrid-tunnel.
type tunnelServer struct {
	proc *process.Process
	// agents is where hubs connect; health serves /metrics.
	agents, health string
}

// egressSocket is the unix socket the apiserver CONNECTs to, in the control
// plane's folder; a socket path has at most 107 bytes.
func egressSocket(workdir string) (string, error) {
	p := filepath.Join(workdir, controlPlaneDir, tunnelSocket)
	if len(p) > 107 {
		return "", fmt.Errorf("the tunnel's socket %s is %d bytes, over the 107 a unix socket path may have: use a shorter --workdir", p, len(p))
	}
	return p, nil
}

// startTunnel runs sitegrid-tunnel with the permissions config/rbac gives
// it, serving agents on loopback with a certificate of the cluster CA.
func startTunnel(ctx context.Context, cp *controlplane.ControlPlane, bin, socket string) (*tunnelServer, error) {
	kc, err := cp.WriteKubeconfig("sitegrid-tunnel", tunnelIdentity, "system:serviceaccounts", "system:serviceaccounts:sitegrid-system")
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
	certFile, keyFile, err := pki.WriteKeyPair(dir, "tls", serving.Cert, serving.Key)
	if err != nil {
		return nil, err
	}
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = controlplane.FreePort(); err != nil {
			return nil, err
		}
	}
	ts := &tunnelServer{agents: "127.0.0.1:" + strconv.Itoa(ports[0]), health: "127.0.0.1:" + strconv.Itoa(ports[1])}
	ts.proc, err = process.Start(process.Spec{Name: "sitegrid-tunnel", Path: bin, LogFile: filepath.Join(cp.Dir, "logs", "sitegrid-tunnel.log"), Args: []string{
		"--kubeconfig=" + kc, "--namespace=sitegrid-system", "--replica=" + TunnelReplica,
		"--agent-address=" + ts.agents, "--health-address=" + ts.health,
		"--tls-cert-file=" + certFile, "--tls-private-key-file=" + keyFile, "--node-client-ca-file=" + cp.CAFile,
		"--connect-socket=" + socket,
		// Every lab node is an edge node: nothing is dialled around the tunnel.
		"--direct=false",
	}})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := ts.proc.WaitReady(wctx, 100*time.Millisecond, process.HTTPReady(nil, "http://"+ts.health+"/readyz")); err != nil {
		ts.proc.Stop(5 * time.Second)
		return nil, fmt.Errorf("sitegrid-tunnel did not become ready (%w):\n%s", err, process.LogTail(ts.proc.Spec.LogFile, 15))
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
func (en *edgeNode) linkTunnel(agents string) error {
	var err error
	if en.tunnelLink, err = link.Listen("127.0.0.1:0", agents); err != nil {
		return fmt.Errorf("tunnel uplink of %s: %w", en.name, err)
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
	hubCfg.Tunnel = config.Tunnel{Servers: []string{en.tunnelLink.Addr()}}
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
