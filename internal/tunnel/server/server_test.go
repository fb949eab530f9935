package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/testenv"
	"github.com/sitegrid/sitegrid/internal/tunnel"
	"github.com/sitegrid/sitegrid/internal/tunnel/agent"
	"github.com/sitegrid/sitegrid/internal/tunnel/server"
)

// rig is a tunnel server on a real apiserver, with a cluster CA to issue
// node certificates from.
type rig struct {
	t      *testing.T
	cs     kubernetes.Interface
	ca     *pki.CA
	pool   *x509.CertPool
	srv    *server.Server
	socket string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	cs, err := kubernetes.NewForConfig(testenv.StartEnvtest(t))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA("test-cluster-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	r := &rig{t: t, cs: cs, ca: ca, pool: pool, socket: filepath.Join(t.TempDir(), "tunnel.sock")}
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sitegrid-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.srv, r.socket, _ = r.replica("tunnel-0")
	return r
}

// replica starts a tunnel server replica; stop ends it as a crash would
// for its agents (their sessions drop), the test's end stops it anyway.
func (r *rig) replica(name string, opts ...func(*server.Config)) (srv *server.Server, socket string, stop func()) {
	t := r.t
	t.Helper()
	serving := r.cert(pki.LeafRequest{CommonName: "sitegrid-tunnel", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Client: true})
	socket = filepath.Join(t.TempDir(), "tunnel.sock")
	cfg := server.Config{
		Client: r.cs, Namespace: "sitegrid-system", Replica: name, AgentAddress: "127.0.0.1:0",
		ServingCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serving, nil },
		NodeCAs:            r.pool, ConnectSocket: socket, HealthAddress: "127.0.0.1:0",
		PeerAddress: "127.0.0.1:0", PeerCAs: r.pool, PeerNames: []string{"sitegrid-tunnel"},
		PeerCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return serving, nil },
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server %s: %v", name, err)
			}
		})
	}
	t.Cleanup(stop)
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		resp, err := http.Get("http://" + srv.HealthAddr() + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
	return srv, socket, stop
}

func (r *rig) cert(req pki.LeafRequest) *tls.Certificate {
	r.t.Helper()
	req.Validity = time.Hour
	kp, err := r.ca.Issue(req)
	if err != nil {
		r.t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key}
}

// node creates a Node whose kubelet (a fakeKubelet) listens on port.
func (r *rig) node(name string, port int, addrs ...string) {
	r.t.Helper()
	ctx := context.Background()
	n, err := r.cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}}
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(port)
	if _, err := r.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

// agent runs an agent presenting cert for node, dialling its kubelet on
// port; cut closes its connection to the server as a broken link would.
type runningAgent struct {
	a           *agent.Agent
	stop        func()
	mu          sync.Mutex
	conn        []net.Conn
	partitioned bool
}

// partition cuts the agent's link to the server and keeps it cut.
func (ra *runningAgent) partition() {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	ra.partitioned = true
	for _, c := range ra.conn {
		_ = c.Close()
	}
	ra.conn = nil
}

func (ra *runningAgent) heal() {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	ra.partitioned = false
}

func (r *rig) agent(node string, cert *tls.Certificate, kubeletPort int) *runningAgent {
	r.t.Helper()
	return r.agentOf(node, cert, kubeletPort, r.srv.AgentAddr())
}

// agentOf is agent with the servers it dials, in order.
func (r *rig) agentOf(node string, cert *tls.Certificate, kubeletPort int, servers ...string) *runningAgent {
	r.t.Helper()
	ra := &runningAgent{}
	d := &net.Dialer{}
	a, err := agent.New(agent.Config{
		NodeName: node, Servers: servers, ServerCAs: r.pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		KubeletAddress:       fmt.Sprintf("127.0.0.1:%d", kubeletPort), MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ra.mu.Lock()
			cut := ra.partitioned && slices.Contains(servers, addr)
			ra.mu.Unlock()
			if cut {
				return nil, fmt.Errorf("dial %s: network is unreachable", addr)
			}
			c, err := d.DialContext(ctx, network, addr)
			if err == nil && slices.Contains(servers, addr) {
				ra.mu.Lock()
				ra.conn = append(ra.conn, c)
				ra.mu.Unlock()
			}
			return c, err
		},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	ra.a = a
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	ra.stop = func() { cancel(); <-done }
	r.t.Cleanup(ra.stop)
	return ra
}

// connect sends the apiserver's CONNECT over the socket: the connection
// on success, else the status line.
func (r *rig) connect(target string) (net.Conn, error) { return connectVia(r.socket, target) }

func connectVia(socket, target string) (net.Conn, error) { return tunnel.Connect(socket, target) }

// fakeKubelet stands in for a kubelet's port: "who" answers its node's
// name, "flood N" writes N bytes, "echo" echoes a line.
type fakeKubelet struct {
	port     int
	accepted chan struct{}
}

func startKubelet(t *testing.T, node string) *fakeKubelet {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	k := &fakeKubelet{port: l.Addr().(*net.TCPAddr).Port, accepted: make(chan struct{}, 100)}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			k.accepted <- struct{}{}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					var n int
					switch {
					case line == "who\n":
						fmt.Fprintf(c, "%s\n", node)
					case strings.HasPrefix(line, "flood "):
						fmt.Sscanf(line, "flood %d", &n)
						_, _ = c.Write(make([]byte, n))
					default:
						_, _ = c.Write([]byte(line))
					}
				}
			}()
		}
	}()
	return k
}

func ask(t *testing.T, c net.Conn, q string) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, q+"\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("ask %q: %v", q, err)
	}
	return strings.TrimSpace(line)
}

func waitConnected(t *testing.T, ra *runningAgent) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func(context.Context) error {
		if ra.a.Connected() == "" {
			return fmt.Errorf("agent not connected")
		}
		return nil
	})
}

func connectEventually(t *testing.T, r *rig, target string) net.Conn {
	t.Helper()
	var c net.Conn
	testenv.Eventually(t, 20*time.Second, func(context.Context) error {
		var err error
		c, err = r.connect(target)
		return err
	})
	return c
}

// TestConnectReachesTheNodesOwnKubelet: by name or by its address, a
// CONNECT arrives at the node's kubelet through its agent; a node with no
// session is a clear error, not a dial.
func TestConnectReachesTheNodesOwnKubelet(t *testing.T) {
	r := newRig(t)
	ka, kb := startKubelet(t, "node-a"), startKubelet(t, "node-b")
	r.node("node-a", ka.port, "198.18.9.1")
	r.node("node-b", kb.port, "198.18.9.2")
	// As the hub connects: with its own node-bound credential.
	waitConnected(t, r.agent("node-a", r.cert(pki.LeafRequest{CommonName: "sitegrid-hub:node-a", Client: true}), ka.port))

	for _, target := range []string{fmt.Sprintf("node-a:%d", ka.port), fmt.Sprintf("198.18.9.1:%d", ka.port)} {
		c := connectEventually(t, r, target)
		if got := ask(t, c, "who"); got != "node-a" {
			t.Errorf("CONNECT %s answered by %q, want node-a's kubelet", target, got)
		}
		c.Close()
	}
	// node-b never connected and direct dials are off: refused, and its
	// kubelet is never dialled.
	if _, err := r.connect(fmt.Sprintf("node-b:%d", kb.port)); err == nil || !strings.Contains(err.Error(), "not a tunnelled node") {
		t.Errorf("CONNECT to a node without a session: %v, want refusal", err)
	}
	if len(kb.accepted) != 0 {
		t.Errorf("node-b's kubelet was dialled")
	}
}

// TestNodeCredentialReachesOnlyItsNode: a hub presenting node A's
// certificate cannot reach node B, nor a port or address that is not A's
// kubelet; a certificate that is not a node's is refused outright.
func TestNodeCredentialReachesOnlyItsNode(t *testing.T) {
	r := newRig(t)
	ka, kb := startKubelet(t, "node-a"), startKubelet(t, "node-b")
	r.node("node-a", ka.port, "198.18.9.1")
	r.node("node-b", kb.port, "198.18.9.2")
	r.node("node-c", kb.port, "10.0.0.5")
	r.node("node-d", kb.port, "10.0.0.5")
	certA := r.cert(pki.LeafRequest{CommonName: "system:node:node-a", Organizations: []string{"system:nodes"}, Client: true})
	// B's agent holds a session once, so B counts as tunnelled; then it
	// stops. A's agent, even told it is node B, is still node A to the
	// server: its certificate says so.
	b := r.agent("node-b", r.cert(pki.LeafRequest{CommonName: "system:node:node-b", Organizations: []string{"system:nodes"}, Client: true}), kb.port)
	waitConnected(t, b)
	c := connectEventually(t, r, fmt.Sprintf("node-b:%d", kb.port))
	c.Close()
	b.stop()
	imposter := r.agent("node-b", certA, ka.port)
	waitConnected(t, imposter)
	for len(kb.accepted) > 0 {
		<-kb.accepted
	}

	cases := []struct{ target, refusal string }{
		{fmt.Sprintf("node-b:%d", kb.port), "node node-b is not connected"},
		{fmt.Sprintf("198.18.9.2:%d", kb.port), "node node-b is not connected"},
		// A's session exists (held by the imposter's connection), and
		// carries only A's streams, which A's agent, believing itself B,
		// refuses: the name in the stream is the server's, from the cert.
		{fmt.Sprintf("node-a:%d", ka.port), "this is node node-b's agent, not node-a's"},
		{"node-a:22", "port 22 is not its kubelet's"},
		{fmt.Sprintf("10.0.0.5:%d", kb.port), "belongs to nodes node-c, node-d"},
	}
	for _, tc := range cases {
		var err error
		testenv.Eventually(t, 20*time.Second, func(context.Context) error {
			var c net.Conn
			if c, err = r.connect(tc.target); err == nil {
				c.Close()
				return nil
			}
			if !strings.Contains(err.Error(), tc.refusal) {
				return fmt.Errorf("CONNECT %s: %v", tc.target, err)
			}
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), tc.refusal) {
			t.Errorf("CONNECT %s: %v, want refusal containing %q", tc.target, err, tc.refusal)
		}
	}
	if len(kb.accepted) != 0 {
		t.Errorf("node-b's kubelet was dialled %d times with node-a's credential", len(kb.accepted))
	}

	// Certificates that are not a node's never get a session: each is
	// counted as refused.
	for _, req := range []pki.LeafRequest{
		{CommonName: "system:node:node-a", Client: true},                                         // no system:nodes group
		{CommonName: "node-a", Organizations: []string{"system:nodes"}, Client: true},            // not system:node:<name>
		{CommonName: "system:node:ghost", Organizations: []string{"system:nodes"}, Client: true}, // no such Node
	} {
		before := refusedAgents(t, r)
		ghost := r.agent("node-a", r.cert(req), ka.port)
		testenv.Eventually(t, 20*time.Second, func(context.Context) error {
			if got := refusedAgents(t, r); got <= before {
				return fmt.Errorf("%s not refused yet", req.CommonName)
			}
			return nil
		})
		ghost.stop()
	}
}

func refusedAgents(t *testing.T, r *rig) int {
	t.Helper()
	resp, err := http.Get("http://" + r.srv.HealthAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var n int
		if _, err := fmt.Sscanf(sc.Text(), "sitegrid_tunnel_agents_refused_total %d", &n); err == nil {
			return n
		}
	}
	t.Fatal("metrics lack sitegrid_tunnel_agents_refused_total")
	return 0
}

// TestKubeletClientsReachOnlyKubelets: over the TCP endpoint, a client
// named a kubelet client (metrics-server using the tunnel as its HTTPS
// proxy) reaches a tunnelled node's kubelet and a cloud node's kubelet
// directly, and nothing else, while the apiserver's name reaches any
// target directly; an unlisted name gets no TLS session at all.
func TestKubeletClientsReachOnlyKubelets(t *testing.T) {
	r := newRig(t)
	srv, _, _ := r.replica("tunnel-tcp", func(c *server.Config) {
		c.ConnectAddress, c.ConnectClientCAs, c.Direct = "127.0.0.1:0", r.pool, true
		c.ConnectClientNames, c.KubeletClientNames = []string{"kube-apiserver-egress"}, []string{"metrics-server"}
	})
	edge, cloud := startKubelet(t, "edge-1"), startKubelet(t, "cloud-1")
	r.node("edge-1", edge.port)
	r.node("cloud-1", cloud.port, "127.0.0.1")
	waitConnected(t, r.agentOf("edge-1", r.cert(pki.LeafRequest{CommonName: "sitegrid-hub:edge-1", Client: true}), edge.port, srv.AgentAddr()))
	other := startKubelet(t, "not-a-node")

	connect := func(client, target string) (net.Conn, error) {
		cert := r.cert(pki.LeafRequest{CommonName: client, Client: true})
		c, err := tls.Dial("tcp", srv.ConnectAddr(), &tls.Config{RootCAs: r.pool, Certificates: []tls.Certificate{*cert}, ServerName: "127.0.0.1"})
		if err != nil {
			return nil, err
		}
		return tunnel.ConnectOn(c, target)
	}
	for _, tc := range []struct{ client, target, answer, refusal string }{
		{"metrics-server", fmt.Sprintf("edge-1:%d", edge.port), "edge-1", ""},
		{"metrics-server", fmt.Sprintf("127.0.0.1:%d", cloud.port), "cloud-1", ""},
		{"metrics-server", fmt.Sprintf("localhost:%d", other.port), "", "this client may reach kubelets only"},
		{"metrics-server", "127.0.0.1:22", "", "port 22 is not its kubelet's"},
		{"kube-apiserver-egress", fmt.Sprintf("localhost:%d", other.port), "not-a-node", ""},
		{"someone-else", fmt.Sprintf("edge-1:%d", edge.port), "", "tls"},
	} {
		var c net.Conn
		var err error
		testenv.Eventually(t, 20*time.Second, func(context.Context) error {
			c, err = connect(tc.client, tc.target)
			if tc.refusal == "" {
				return err
			}
			return nil
		})
		switch {
		case tc.refusal != "" && (err == nil || !strings.Contains(err.Error(), tc.refusal)):
			t.Errorf("%s CONNECT %s: %v, want refusal containing %q", tc.client, tc.target, err, tc.refusal)
		case tc.refusal == "" && err != nil:
			t.Errorf("%s CONNECT %s: %v", tc.client, tc.target, err)
		case tc.refusal == "":
			if got := ask(t, c, "who"); got != tc.answer {
				t.Errorf("%s CONNECT %s answered by %q, want %q", tc.client, tc.target, got, tc.answer)
			}
		}
		if c != nil {
			c.Close()
		}
	}
	if len(other.accepted) != 1 {
		t.Errorf("the non-node listener was dialled %d times, want once (by the apiserver's name only)", len(other.accepted))
	}
}

// TestSlowReaderDelaysNoOtherStream: a stream whose reader reads nothing
// while its kubelet floods it does not hold up another stream of the same
// node, and a cut link is a clear error until the agent reconnects.
func TestSlowReaderDelaysNoOtherStream(t *testing.T) {
	r := newRig(t)
	ka := startKubelet(t, "node-a")
	r.node("node-a", ka.port)
	ra := r.agent("node-a", r.cert(pki.LeafRequest{CommonName: "system:node:node-a", Organizations: []string{"system:nodes"}, Client: true}), ka.port)
	waitConnected(t, ra)
	target := fmt.Sprintf("node-a:%d", ka.port)

	stalled := connectEventually(t, r, target)
	defer stalled.Close()
	// 64 MiB, far beyond every window and buffer on the way, never read.
	if _, err := io.WriteString(stalled, "flood 67108864\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let the flood fill the stalled stream's window
	other := connectEventually(t, r, target)
	defer other.Close()
	for i := range 100 {
		if got := ask(t, other, fmt.Sprintf("line %d", i)); got != fmt.Sprintf("line %d", i) {
			t.Fatalf("echo %d: got %q", i, got)
		}
	}

	// A partition: refused with a clear error; healed, served again.
	ra.partition()
	testenv.Eventually(t, 20*time.Second, func(context.Context) error {
		c, err := r.connect(target)
		if err == nil {
			c.Close()
			return fmt.Errorf("CONNECT still served while partitioned")
		}
		if !strings.Contains(err.Error(), "node node-a is not connected to the tunnel") {
			t.Fatalf("CONNECT while partitioned: %v, want a clear error", err)
		}
		return nil
	})
	ra.heal()
	c := connectEventually(t, r, target)
	defer c.Close()
	if got := ask(t, c, "who"); got != "node-a" {
		t.Errorf("after reconnect: %q", got)
	}
}

// TestReplicasForwardAndTakeOver: with two replicas, a CONNECT reaching the
// one that does not hold the node's session is forwarded, once, to the one
// that does; when that one dies, the node reconnects to the other and is
// reachable again through either socket the apiserver may use.
func TestReplicasForwardAndTakeOver(t *testing.T) {
	r := newRig(t)
	b, _, stopB := r.replica("tunnel-1")
	ka := startKubelet(t, "node-a")
	r.node("node-a", ka.port)
	ra := r.agentOf("node-a", r.cert(pki.LeafRequest{CommonName: "sitegrid-hub:node-a", Client: true}), ka.port, b.AgentAddr(), r.srv.AgentAddr())
	waitConnected(t, ra)
	if got := ra.a.Connected(); got != b.AgentAddr() {
		t.Fatalf("agent connected to %s, want replica tunnel-1 at %s", got, b.AgentAddr())
	}
	target := fmt.Sprintf("node-a:%d", ka.port)
	// Through tunnel-0, which must find tunnel-1 in the node's Lease.
	c := connectEventually(t, r, target)
	if got := ask(t, c, "who"); got != "node-a" {
		t.Errorf("forwarded CONNECT answered by %q", got)
	}
	c.Close()
	if got := metric(t, r.srv, `sitegrid_tunnel_streams_total{result="forwarded"}`); got < 1 {
		t.Errorf("tunnel-0 forwarded %d streams, want at least 1", got)
	}

	// tunnel-1 dies (its socket with it): the node is back through tunnel-0.
	stopB()
	c = connectEventually(t, r, target)
	if got := ask(t, c, "who"); got != "node-a" {
		t.Errorf("after tunnel-1 died: answered by %q", got)
	}
	c.Close()
	if got := ra.a.Connected(); got != r.srv.AgentAddr() {
		t.Errorf("agent connected to %q after tunnel-1 died, want tunnel-0", got)
	}
}

func metric(t *testing.T, srv *server.Server, name string) int {
	t.Helper()
	resp, err := http.Get("http://" + srv.HealthAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			var n int
			fmt.Sscanf(v, "%d", &n)
			return n
		}
	}
	t.Fatalf("metrics lack %s", name)
	return 0
}
