// Command tunnel measures sitegrid-tunnel against a direct connection, side
// by side in one run: a stand-in kubelet port on loopback, serving TLS as a
// kubelet does, that floods or echoes, reached as kube-apiserver reaches a
// kubelet: TLS directly, or TLS inside a CONNECT on the tunnel server's
// unix socket carried by an agent's session. It reports throughput of -bytes per transfer and first-byte
// latency (connect, ask, first byte back) p50 and p99, then the server's
// resident memory idle, with -nodes simulated agents connected (each a
// Node of the apiserver with its own certificate), and with -streams idle
// streams open. Medians of -rounds rounds; docs/tunnel.md has the figures.
//
// Then the same two paths over a shaped uplink (-wan-mbit each way,
// -wan-rtt round trip), as a site's: the direct path crosses it to the
// kubelet, the tunnel's crosses it in the agent's session.
//
//	go run ./hack/bench/tunnel [-nodes 1000] [-streams 1000] [-bytes 268435456] [-samples 300] [-rounds 3] [-wan-mbit 100] [-wan-rtt 40ms]
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/gobuild"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/process"
	"github.com/sitegrid/sitegrid/internal/tunnel"
	"github.com/sitegrid/sitegrid/internal/tunnel/agent"
)

func main() {
	nodes := flag.Int("nodes", 1000, "simulated nodes (agents) connected")
	streams := flag.Int("streams", 1000, "idle streams held open for the memory figure")
	size := flag.Int("bytes", 256<<20, "bytes per throughput transfer")
	samples := flag.Int("samples", 300, "first-byte samples per path and round")
	rounds := flag.Int("rounds", 3, "rounds; medians are reported")
	wanMbit := flag.Float64("wan-mbit", 100, "the shaped uplink's rate, Mbit/s each way (0: no WAN comparison)")
	wanRTT := flag.Duration("wan-rtt", 40*time.Millisecond, "the shaped uplink's round trip")
	wanBytes := flag.Int("wan-bytes", 32<<20, "bytes per throughput transfer over the shaped uplink")
	klogFlags := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(klogFlags)
	_ = klogFlags.Set("v", "0")
	_ = klogFlags.Set("logtostderr", "false")
	klog.SetOutput(io.Discard)
	flag.Parse()
	w := wanConfig{mbit: *wanMbit, rtt: *wanRTT, bytes: *wanBytes}
	if err := run(*nodes, *streams, *size, *samples, *rounds, w); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

type wanConfig struct {
	mbit  float64
	rtt   time.Duration
	bytes int
}

func run(nodes, streams, size, samples, rounds int, wc wanConfig) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "bench-tunnel-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := kubebin.Ensure(ctx, kubebin.Options{Progress: os.Stderr})
	if err != nil {
		return err
	}
	cp, err := controlplane.Start(ctx, controlplane.Config{Dir: filepath.Join(dir, "cp"), Bin: bin, APIServerOnly: true})
	if err != nil {
		return err
	}
	defer cp.Stop()
	admin, err := cp.Clientset()
	if err != nil {
		return err
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sitegrid-system"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	kubeletCert, err := cp.IssueCert(pki.LeafRequest{CommonName: "bench-kubelet", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	if err != nil {
		return err
	}
	kubelet, err := startKubelet(&tls.Certificate{Certificate: [][]byte{kubeletCert.Cert.Raw}, PrivateKey: kubeletCert.Key})
	if err != nil {
		return err
	}
	port := kubelet.Addr().(*net.TCPAddr).Port

	tunnelBin := filepath.Join(dir, "sitegrid-tunnel")
	if out, err := gobuild.Command(ctx, tunnelBin, "./cmd/sitegrid-tunnel").CombinedOutput(); err != nil {
		return fmt.Errorf("build sitegrid-tunnel: %v\n%s", err, out)
	}
	srv, err := startServer(ctx, cp, tunnelBin, dir)
	if err != nil {
		return err
	}
	defer srv.proc.Stop(5 * time.Second)
	idle := rss(srv.proc.PID())

	fmt.Fprintf(os.Stderr, "creating %d nodes and their agents\n", nodes)
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(caPEM)
	actx, stopAgents := context.WithCancel(ctx)
	defer stopAgents()
	agents := make([]*agent.Agent, 0, nodes)
	sim := simulator{ctx: actx, cp: cp, admin: admin, pool: pool, kubelet: kubelet.Addr().String(), port: port}
	for i := range nodes {
		a, err := sim.node(fmt.Sprintf("bench-node-%d", i), srv.agents)
		if err != nil {
			return err
		}
		agents = append(agents, a)
	}
	if err := waitFor(2*time.Minute, func() bool {
		return !slices.ContainsFunc(agents, func(a *agent.Agent) bool { return a.Connected() == "" })
	}); err != nil {
		return fmt.Errorf("agents not all connected: %w", err)
	}
	// The server's Leases are written on connect: let them settle.
	time.Sleep(5 * time.Second)
	connected := rss(srv.proc.PID())

	target := fmt.Sprintf("bench-node-0:%d", port)
	// The apiserver's TLS to the kubelet, end to end on both paths.
	kubeletTLS := func(c net.Conn, err error) (net.Conn, error) {
		if err != nil {
			return nil, err
		}
		tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, err
		}
		return tc, nil
	}
	direct := func() (net.Conn, error) { return kubeletTLS(net.Dial("tcp", kubelet.Addr().String())) }
	tunnelled := func() (net.Conn, error) { return kubeletTLS(connectVia(srv.socket, target)) }
	var thrDirect, thrTunnel, fbDirect50, fbDirect99, fbTunnel50, fbTunnel99 []float64
	for r := range rounds {
		for _, path := range []struct {
			dial     func() (net.Conn, error)
			thr      *[]float64
			p50, p99 *[]float64
		}{{direct, &thrDirect, &fbDirect50, &fbDirect99}, {tunnelled, &thrTunnel, &fbTunnel50, &fbTunnel99}} {
			mbps, err := throughput(path.dial, size)
			if err != nil {
				return err
			}
			p50, p99, err := firstByte(path.dial, samples)
			if err != nil {
				return err
			}
			*path.thr, *path.p50, *path.p99 = append(*path.thr, mbps), append(*path.p50, p50), append(*path.p99, p99)
		}
		fmt.Fprintf(os.Stderr, "round %d: direct %.0f MB/s, tunnel %.0f MB/s\n", r+1, thrDirect[r], thrTunnel[r])
	}

	// Over a shaped uplink: the direct path crosses it to the kubelet; the
	// tunnel's crosses it in the agent's session (the agent is at the
	// site, beside the kubelet).
	var wanDirect, wanTunnel, wanFBDirect, wanFBTunnel []float64
	if wc.mbit > 0 {
		toKubelet, err := startWAN(kubelet.Addr().String(), wc.mbit, wc.rtt)
		if err != nil {
			return err
		}
		defer toKubelet.Close()
		toServer, err := startWAN(srv.agents, wc.mbit, wc.rtt)
		if err != nil {
			return err
		}
		defer toServer.Close()
		name := fmt.Sprintf("bench-node-%d", nodes)
		a, err := sim.node(name, toServer.Addr())
		if err != nil {
			return err
		}
		if err := waitFor(time.Minute, func() bool { return a.Connected() != "" }); err != nil {
			return fmt.Errorf("agent over the shaped uplink not connected: %w", err)
		}
		wanTarget := fmt.Sprintf("%s:%d", name, port)
		for r := range rounds {
			for _, path := range []struct {
				dial    func() (net.Conn, error)
				thr, fb *[]float64
			}{
				{func() (net.Conn, error) { return kubeletTLS(net.Dial("tcp", toKubelet.Addr())) }, &wanDirect, &wanFBDirect},
				{func() (net.Conn, error) { return kubeletTLS(connectVia(srv.socket, wanTarget)) }, &wanTunnel, &wanFBTunnel},
			} {
				mbps, err := throughput(path.dial, wc.bytes)
				if err != nil {
					return err
				}
				p50, _, err := firstByte(path.dial, 20)
				if err != nil {
					return err
				}
				*path.thr, *path.fb = append(*path.thr, mbps), append(*path.fb, p50)
			}
			fmt.Fprintf(os.Stderr, "shaped round %d: direct %.1f MB/s, tunnel %.1f MB/s\n", r+1, wanDirect[r], wanTunnel[r])
		}
	}

	// Idle streams spread over the nodes, held open.
	var open []net.Conn
	for i := range streams {
		c, err := connectVia(srv.socket, fmt.Sprintf("bench-node-%d:%d", i%nodes, port))
		if err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
		open = append(open, c)
	}
	time.Sleep(2 * time.Second)
	withStreams := rss(srv.proc.PID())
	for _, c := range open {
		_ = c.Close()
	}

	fmt.Printf("sitegrid-tunnel, medians of %d rounds (%d MiB per transfer, %d first-byte samples)\n", rounds, size>>20, samples)
	fmt.Printf("| path | throughput | first byte p50 | first byte p99 |\n| --- | --- | --- | --- |\n")
	fmt.Printf("| direct (TLS to the kubelet) | %.0f MB/s | %.3f ms | %.3f ms |\n", median(thrDirect), median(fbDirect50), median(fbDirect99))
	fmt.Printf("| through the tunnel (the same TLS inside) | %.0f MB/s (%.0f %% of direct) | %.3f ms (+%.3f) | %.3f ms (+%.3f) |\n",
		median(thrTunnel), 100*median(thrTunnel)/median(thrDirect), median(fbTunnel50), median(fbTunnel50)-median(fbDirect50), median(fbTunnel99), median(fbTunnel99)-median(fbDirect99))
	if wc.mbit > 0 {
		fmt.Printf("over a shaped uplink (%.0f Mbit/s each way, %s round trip; %d MiB per transfer, 20 first-byte samples)\n", wc.mbit, wc.rtt, wc.bytes>>20)
		fmt.Printf("| path | throughput | first byte p50 |\n| --- | --- | --- |\n")
		fmt.Printf("| direct (TLS to the kubelet across the uplink) | %.1f MB/s | %.1f ms |\n", median(wanDirect), median(wanFBDirect))
		fmt.Printf("| through the tunnel (its session across the uplink) | %.1f MB/s (%.0f %% of direct) | %.1f ms (+%.1f) |\n",
			median(wanTunnel), 100*median(wanTunnel)/median(wanDirect), median(wanFBTunnel), median(wanFBTunnel)-median(wanFBDirect))
	}
	fmt.Printf("server RSS: idle %.1f MiB; %d nodes connected %.1f MiB (%.1f MiB per 1,000); plus %d idle streams %.1f MiB (%.1f MiB per 1,000 streams)\n",
		idle, nodes, connected, (connected-idle)*1000/float64(nodes), streams, withStreams, (withStreams-connected)*1000/float64(streams))
	return nil
}

type server struct {
	proc           *process.Process
	agents, socket string
}

func startServer(ctx context.Context, cp *controlplane.ControlPlane, bin, dir string) (*server, error) {
	kp, err := cp.IssueCert(pki.LeafRequest{CommonName: "sitegrid-tunnel", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Client: true})
	if err != nil {
		return nil, err
	}
	certFile, keyFile, err := pki.WriteKeyPair(dir, "tunnel", kp.Cert, kp.Key)
	if err != nil {
		return nil, err
	}
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = controlplane.FreePort(); err != nil {
			return nil, err
		}
	}
	s := &server{agents: "127.0.0.1:" + strconv.Itoa(ports[0]), socket: filepath.Join(dir, "tunnel.sock")}
	health := "127.0.0.1:" + strconv.Itoa(ports[1])
	s.proc, err = process.Start(process.Spec{Name: "sitegrid-tunnel", Path: bin, LogFile: filepath.Join(dir, "tunnel.log"), Args: []string{
		"--kubeconfig=" + cp.AdminKubeconfig, "--namespace=sitegrid-system", "--replica=bench",
		"--agent-address=" + s.agents, "--health-address=" + health, "--connect-socket=" + s.socket,
		"--tls-cert-file=" + certFile, "--tls-private-key-file=" + keyFile, "--node-client-ca-file=" + cp.CAFile, "--direct=false",
	}})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return s, s.proc.WaitReady(wctx, 100*time.Millisecond, process.HTTPReady(nil, "http://"+health+"/readyz"))
}

// simulator makes simulated nodes: a Node whose kubelet is the stand-in,
// and an agent with the node's own certificate, running until ctx ends.
type simulator struct {
	ctx     context.Context
	cp      *controlplane.ControlPlane
	admin   kubernetes.Interface
	pool    *x509.CertPool
	kubelet string
	port    int
}

// node creates the node name and starts its agent, dialling server.
func (sim simulator) node(name, server string) (*agent.Agent, error) {
	if err := createNode(sim.ctx, sim.admin, name, sim.port); err != nil {
		return nil, err
	}
	kp, err := sim.cp.IssueCert(pki.LeafRequest{CommonName: "sitegrid-hub:" + name, Client: true})
	if err != nil {
		return nil, err
	}
	cert := &tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key}
	a, err := agent.New(agent.Config{NodeName: name, Servers: []string{server}, ServerCAs: sim.pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		KubeletAddress:       sim.kubelet})
	if err != nil {
		return nil, err
	}
	go func() { _ = a.Run(sim.ctx) }()
	return a, nil
}

func createNode(ctx context.Context, cs kubernetes.Interface, name string, port int) error {
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(port)
	_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// startKubelet stands in for a kubelet's port, over TLS: "flood N" sends
// N bytes, any other line is echoed.
func startKubelet(cert *tls.Certificate) (net.Listener, error) {
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<20)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if n, ok := strings.CutPrefix(strings.TrimSpace(line), "flood "); ok {
						left, _ := strconv.Atoi(n)
						for left > 0 {
							k, err := c.Write(buf[:min(left, len(buf))])
							if err != nil {
								return
							}
							left -= k
						}
						continue
					}
					_, _ = c.Write([]byte(line))
				}
			}()
		}
	}()
	return l, nil
}

func connectVia(socket, target string) (net.Conn, error) { return tunnel.Connect(socket, target) }

// throughput is MB/s of one transfer of size bytes.
func throughput(dial func() (net.Conn, error), size int) (float64, error) {
	c, err := dial()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	if _, err := fmt.Fprintf(c, "flood %d\n", size); err != nil {
		return 0, err
	}
	if _, err := io.CopyN(io.Discard, c, int64(size)); err != nil {
		return 0, err
	}
	return float64(size) / 1e6 / time.Since(start).Seconds(), nil
}

// firstByte is the p50 and p99, in ms, of a new connection's first answer:
// dial (and CONNECT), the TLS handshake, one line out, its echo's first
// byte back.
func firstByte(dial func() (net.Conn, error), n int) (float64, float64, error) {
	var ms []float64
	one := make([]byte, 1)
	for range n {
		start := time.Now()
		c, err := dial()
		if err != nil {
			return 0, 0, err
		}
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			c.Close()
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, one); err != nil {
			c.Close()
			return 0, 0, err
		}
		ms = append(ms, float64(time.Since(start).Microseconds())/1000)
		c.Close()
	}
	slices.Sort(ms)
	return ms[len(ms)/2], ms[len(ms)*99/100], nil
}

func rss(pid int) float64 {
	mem, err := process.Status(pid)
	if err != nil {
		return 0
	}
	return float64(mem["VmRSS"]) / (1 << 20)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", d)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}
