// Package server is the cloud end of the tunnel (cmd/sitegrid-tunnel): it
// holds the sessions node agents dial out to, and answers kube-apiserver's
// egress CONNECTs by opening a stream of the target node's session. It
// resolves every target to a node from the Node objects and reaches only
// that node's kubelet, so a node's credential can never reach another.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/unixsock"
)

// Config configures a tunnel server.
type Config struct {
	// Client reads Nodes and writes the tunnel's Leases.
	Client kubernetes.Interface
	// Namespace holds the Leases; Replica names this replica in them (its
	// pod name).
	Namespace, Replica string
	// AgentAddress is where agents connect (TLS, client certificates of
	// NodeCAs required).
	AgentAddress string
	// ServingCertificate is the server's certificate towards agents and
	// TCP CONNECT clients.
	ServingCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// NodeCAs verify node client certificates (the cluster CA).
	NodeCAs *x509.CertPool
	// ConnectSocket is a unix socket for a co-located apiserver's
	// CONNECTs; only its owner (mode 0600) can use it.
	ConnectSocket string
	// ConnectAddress serves CONNECTs over TCP with mTLS: the client's
	// certificate must be of ConnectClientCAs and name one of
	// ConnectClientNames (its common name).
	ConnectAddress     string
	ConnectClientCAs   *x509.CertPool
	ConnectClientNames []string
	// KubeletClientNames are the common names on ConnectAddress that may
	// reach nodes' kubelets and nothing else, whatever Direct says: the
	// HTTPS proxy metrics-server and Prometheus scrape kubelets through.
	KubeletClientNames []string
	// PeerAddress, when set, takes the CONNECTs other replicas forward to
	// this one for the nodes it holds (TLS; the client's certificate of
	// PeerCAs naming one of PeerNames); PeerAdvertise is what they dial
	// (default PeerAddress). PeerCertificate is this replica's certificate
	// towards the others (it needs client authentication among its uses).
	PeerAddress, PeerAdvertise string
	PeerCAs                    *x509.CertPool
	PeerNames                  []string
	PeerCertificate            func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// HealthAddress serves /healthz, /readyz and /metrics.
	HealthAddress string
	// Direct dials targets that are no tunnelled node's directly, as the
	// apiserver would without egress selection (cloud nodes, webhooks and
	// aggregated APIs by Service). Off: they are refused.
	Direct bool
}

// Server is a tunnel server built and not yet run.
type Server struct {
	cfg      Config
	agentTLS *tls.Config
	factory  informers.SharedInformerFactory
	leaseInf informers.SharedInformerFactory
	nodes    cache.Indexer
	leases   *leases
	sessions *sessions
	metrics  *serverMetrics
	// listeners are opened by New, so their addresses are known at once.
	agentL, socketL, tcpL, peerL, healthL net.Listener
	synced                                []cache.InformerSynced
	ready                                 chan struct{}
}

// New checks cfg, opens the listeners and builds the informers.
func New(cfg Config) (_ *Server, err error) {
	if cfg.Client == nil || cfg.Namespace == "" || cfg.Replica == "" || cfg.AgentAddress == "" || cfg.ServingCertificate == nil || cfg.NodeCAs == nil {
		return nil, errors.New("tunnel server: client, namespace, replica, agent address, serving certificate and node CAs are required")
	}
	if cfg.ConnectSocket == "" && cfg.ConnectAddress == "" {
		return nil, errors.New("tunnel server: no CONNECT endpoint: set a socket, an address, or both")
	}
	if cfg.ConnectAddress != "" && (cfg.ConnectClientCAs == nil || len(cfg.ConnectClientNames)+len(cfg.KubeletClientNames) == 0) {
		return nil, errors.New("tunnel server: a TCP CONNECT endpoint needs client CAs and the client names allowed")
	}
	s := &Server{cfg: cfg, sessions: &sessions{nodes: map[string]*yamux.Session{}}, ready: make(chan struct{})}
	s.metrics = newServerMetrics(s.sessions.count)
	s.agentTLS = &tls.Config{GetCertificate: cfg.ServingCertificate, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: cfg.NodeCAs, MinVersion: tls.VersionTLS13}
	defer func() {
		if err != nil {
			s.closeListeners()
		}
	}()
	if s.agentL, err = net.Listen("tcp", cfg.AgentAddress); err != nil {
		return nil, err
	}
	if cfg.ConnectSocket != "" {
		if s.socketL, err = unixsock.Listen(cfg.ConnectSocket); err != nil {
			return nil, err
		}
	}
	if cfg.ConnectAddress != "" {
		tc := &tls.Config{GetCertificate: cfg.ServingCertificate, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: cfg.ConnectClientCAs, MinVersion: tls.VersionTLS12,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if cn := cs.PeerCertificates[0].Subject.CommonName; !slices.Contains(cfg.ConnectClientNames, cn) && !slices.Contains(cfg.KubeletClientNames, cn) {
					return fmt.Errorf("client %q may not CONNECT", cn)
				}
				return nil
			}}
		if s.tcpL, err = tls.Listen("tcp", cfg.ConnectAddress, tc); err != nil {
			return nil, err
		}
	}
	if cfg.PeerAddress != "" {
		if cfg.PeerCAs == nil || len(cfg.PeerNames) == 0 || cfg.PeerCertificate == nil {
			return nil, errors.New("tunnel server: a peer address needs peer CAs, peer names and a peer certificate")
		}
		pc := &tls.Config{GetCertificate: cfg.ServingCertificate, ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS13,
			VerifyConnection: peerTLS(cfg.PeerCAs, cfg.PeerNames)}
		if s.peerL, err = tls.Listen("tcp", cfg.PeerAddress, pc); err != nil {
			return nil, err
		}
		if s.cfg.PeerAdvertise == "" {
			s.cfg.PeerAdvertise = s.peerL.Addr().String()
		}
		if host, _, err := net.SplitHostPort(s.cfg.PeerAdvertise); err != nil || host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
			return nil, fmt.Errorf("tunnel server: peer address %q is not one other replicas can dial: set the advertised peer address (the pod IP)", s.cfg.PeerAdvertise)
		}
	}
	if cfg.HealthAddress != "" {
		if s.healthL, err = net.Listen("tcp", cfg.HealthAddress); err != nil {
			return nil, err
		}
	}

	// Only what routing needs is kept of a Node: at 100,000 nodes their
	// images and conditions would be most of the server's memory.
	s.factory = informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0, informers.WithTransform(slimNode))
	ni := s.factory.Core().V1().Nodes().Informer()
	if err := ni.AddIndexers(cache.Indexers{byAddress: addressIndex}); err != nil {
		return nil, err
	}
	s.nodes = ni.GetIndexer()
	s.leaseInf = informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0, informers.WithNamespace(cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = NodeLabel }))
	li := s.leaseInf.Coordination().V1().Leases().Informer()
	s.synced = []cache.InformerSynced{ni.HasSynced, li.HasSynced}
	s.leases = &leases{client: cfg.Client, namespace: cfg.Namespace, replica: cfg.Replica, peer: s.cfg.PeerAdvertise, lister: li.GetIndexer(), nodes: s.nodes, sessions: s.sessions}
	return s, nil
}

// AgentAddr, SocketPath and ConnectAddr are where the server listens.
func (s *Server) AgentAddr() string { return s.agentL.Addr().String() }

// HealthAddr is the address of /healthz, /readyz and /metrics.
func (s *Server) HealthAddr() string { return s.healthL.Addr().String() }

// PeerAddr is where other replicas forward CONNECTs to.
func (s *Server) PeerAddr() string { return s.peerL.Addr().String() }

// ConnectAddr is the TCP CONNECT endpoint's address.
func (s *Server) ConnectAddr() string { return s.tcpL.Addr().String() }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	defer s.closeListeners()
	s.factory.Start(ctx.Done())
	s.leaseInf.Start(ctx.Done())
	defer s.factory.Shutdown()
	defer s.leaseInf.Shutdown()
	g, ctx := errgroup.WithContext(ctx)
	if s.healthL != nil {
		hs := &http.Server{Handler: s.healthHandler(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error { return serveHTTP(ctx, hs, s.healthL) })
	}
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return g.Wait()
	}
	close(s.ready)
	klog.InfoS("tunnel server ready", "replica", s.cfg.Replica, "agents", s.AgentAddr())
	g.Go(func() error { return s.serveAgents(ctx, s.agentL) })
	for _, e := range []struct {
		l net.Listener
		h http.Handler
	}{{s.socketL, s}, {s.tcpL, s}, {s.peerL, peerHandler{s}}} {
		if e.l == nil {
			continue
		}
		hs := &http.Server{Handler: e.h, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error { return serveHTTP(ctx, hs, e.l) })
	}
	g.Go(func() error { s.leases.renew(ctx); return nil })
	g.Go(func() error {
		<-ctx.Done()
		_ = s.agentL.Close()
		return nil
	})
	return g.Wait()
}

func (s *Server) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-s.ready:
			_, _ = w.Write([]byte("ok"))
		default:
			http.Error(w, "node and lease caches not synced yet", http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		s.metrics.set.WritePrometheus(w)
	})
	return mux
}

// serveHTTP serves hs on l until ctx ends, then shuts it down; hijacked
// CONNECT streams are not waited for.
func serveHTTP(ctx context.Context, hs *http.Server, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		return nil
	}
}

func (s *Server) closeListeners() {
	for _, l := range []net.Listener{s.agentL, s.socketL, s.tcpL, s.peerL, s.healthL} {
		if l != nil {
			_ = l.Close()
		}
	}
}

// slimNode keeps of a Node what routing reads: name, UID, addresses and
// the kubelet's port.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion},
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses, DaemonEndpoints: n.Status.DaemonEndpoints},
	}, nil
}
