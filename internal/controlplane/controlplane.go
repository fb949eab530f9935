// Package controlplane runs a real Kubernetes control plane on one machine:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (as
// the kubelets of simulated nodes), all built from source by kubebin. The
// test harness and `sitegridctl lab` both stand on it.
package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/sitegrid/sitegrid/internal/kubebin"
	"github.com/sitegrid/sitegrid/internal/pki"
	"github.com/sitegrid/sitegrid/internal/process"
)

// Address plan. Every address a simulated host, pod or Service gets is in
// 198.18.0.0/15, the range reserved for network benchmarks, so nothing the
// lab or a test does can reach a real network.
const (
	// DefaultAdvertiseAddress is where the kubernetes Service points: the
	// host side of the simulated site networks.
	DefaultAdvertiseAddress = "198.18.0.1"
	// DefaultServiceCIDR holds Service cluster IPs.
	DefaultServiceCIDR = "198.19.128.0/20"
	// DefaultClusterCIDR holds pod IPs; each node gets a /24 of it.
	DefaultClusterCIDR = "198.19.0.0/17"
	// KubernetesServiceIP is the first address of DefaultServiceCIDR.
	KubernetesServiceIP = "198.19.128.1"
)

// KubernetesServiceNames are the names in-cluster clients reach the
// apiserver by; a certificate serving them as the apiserver names them all.
var KubernetesServiceNames = []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}

// Component names, as used in logs, errors and the lab's status.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	KubeScheduler         = "kube-scheduler"
	Kwok                  = "kwok"
)

// Config describes a control plane.
type Config struct {
	// Dir holds certificates, kubeconfigs, etcd data and logs. Required.
	Dir string
	// Bin is the set of binaries to run. Required.
	Bin kubebin.Set
	// APIServerPort is the apiserver's port on 127.0.0.1; 0 picks a free one.
	APIServerPort int
	// NodeLeaseSeconds is the lease duration of simulated kubelets (default 40).
	NodeLeaseSeconds int
	// ControllerManagerArgs and APIServerArgs are added to the defaults; a
	// later flag wins, so tests can shorten grace periods.
	ControllerManagerArgs []string
	APIServerArgs         []string
	// Progress receives a line per started component; nil discards them.
	Progress io.Writer
	// APIServerOnly starts etcd and kube-apiserver only, for benchmarks that
	// measure a controller alone.
	APIServerOnly bool
	// EgressSocket, when set, sends everything the apiserver dials towards
	// nodes (egress selection "cluster": logs, exec, attach, port-forward,
	// nodes/proxy) as HTTP CONNECT to a tunnel server on this unix socket,
	// and has it dial nodes by name (Hostname first): nothing reaches a
	// node but through the tunnel.
	EgressSocket string
	// NoSharedKwok starts no kwok for the nodes created without OwnKubelet:
	// every simulated node gets a kubelet of its own (StartNodeKwokVia).
	NoSharedKwok bool
}

// Component is one running process of the control plane.
type Component struct {
	Name string
	PID  int
	Port int
	Log  string
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	Dir string
	// Endpoint is the apiserver URL.
	Endpoint string
	// AdminKubeconfig is a kubeconfig with cluster-admin rights.
	AdminKubeconfig string
	// CAFile is the cluster CA certificate.
	CAFile string

	ca        *pki.CA
	adminREST *rest.Config
	// kwok settings, kept for StartNodeKwok.
	kwokBin, kwokStages, kwokKubeconfig string
	kwokLeaseSeconds                    int
	components                          []Component
	procs                               []*process.Process
}

// Start runs every component and returns once the apiserver is ready and the
// other components report healthy. On failure everything it started is
// stopped again.
func Start(ctx context.Context, cfg Config) (_ *ControlPlane, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("controlplane: Dir is required")
	}
	if err := cfg.Bin.Check(); err != nil {
		return nil, err
	}
	if cfg.NodeLeaseSeconds == 0 {
		cfg.NodeLeaseSeconds = 40
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	for _, d := range []string{"pki", "logs", "etcd", "kubeconfig", "certs"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	cp := &ControlPlane{Dir: cfg.Dir}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()
	p, err := cp.writePKI()
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}

	apiPort := cfg.APIServerPort
	if apiPort == 0 {
		if apiPort, err = FreePort(); err != nil {
			return nil, err
		}
	} else if err := PortFree(apiPort); err != nil {
		return nil, err
	}
	cp.Endpoint = "https://127.0.0.1:" + strconv.Itoa(apiPort)

	if err := cp.startEtcd(ctx, cfg, p.etcd, progress); err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("https://127.0.0.1:%d", cp.components[0].Port)
	if err := cp.startAPIServer(ctx, cfg, p, apiPort, etcdURL, progress); err != nil {
		return nil, err
	}
	if cfg.APIServerOnly {
		return cp, nil
	}
	cs, err := cp.Clientset()
	if err != nil {
		return nil, err
	}
	if err := publishClusterInfo(ctx, cs, cp.Endpoint, cp.CAFile); err != nil {
		return nil, err
	}
	if err := bindClusterAdmins(ctx, cs); err != nil {
		return nil, err
	}
	if err := cp.startControllerManager(ctx, cfg, p, progress); err != nil {
		return nil, err
	}
	if err := cp.startScheduler(ctx, cfg, p, progress); err != nil {
		return nil, err
	}
	return cp, cp.startKwok(ctx, cfg, progress)
}

// paths of the files writePKI makes.
type pkiPaths struct {
	ca, caKey             string
	apiserverCert, apiKey string
	saKey, saPub          string
	servingCert, servKey  string // for controller-manager and scheduler
	frontProxyCA          string // authenticates the aggregator's proxied requests
	proxyCert, proxyKey   string
	kubeletClientCert     string // the apiserver's client certificate towards kubelets
	kubeletClientKey      string
	etcd                  etcdPKI
}

func (cp *ControlPlane) writePKI() (pkiPaths, error) {
	var p pkiPaths
	dir := filepath.Join(cp.Dir, "pki")
	ca, err := pki.NewCA("sitegrid-lab-ca", 10*365*24*time.Hour)
	if err != nil {
		return p, err
	}
	cp.ca = ca
	if p.ca, p.caKey, err = pki.WriteKeyPair(dir, "ca", ca.Cert, ca.Key); err != nil {
		return p, err
	}
	cp.CAFile = p.ca
	api, err := ca.Issue(pki.LeafRequest{
		CommonName: "kube-apiserver",
		DNSNames:   append([]string{"localhost"}, KubernetesServiceNames...),
		IPs:        []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(DefaultAdvertiseAddress), net.ParseIP(KubernetesServiceIP)},
		Server:     true, Validity: 365 * 24 * time.Hour,
	})
	if err != nil {
		return p, err
	}
	if p.apiserverCert, p.apiKey, err = pki.WriteKeyPair(dir, "apiserver", api.Cert, api.Key); err != nil {
		return p, err
	}
	serving, err := ca.Issue(pki.LeafRequest{
		CommonName: "localhost", DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")},
		Server: true, Validity: 365 * 24 * time.Hour,
	})
	if err != nil {
		return p, err
	}
	if p.servingCert, p.servKey, err = pki.WriteKeyPair(dir, "serving", serving.Cert, serving.Key); err != nil {
		return p, err
	}
	// The aggregation layer gets a CA of its own: a client certificate of the
	// cluster CA must not be able to assert any user through request headers.
	fpCA, err := pki.NewCA("sitegrid-lab-front-proxy-ca", 10*365*24*time.Hour)
	if err != nil {
		return p, err
	}
	if p.frontProxyCA, _, err = pki.WriteKeyPair(dir, "front-proxy-ca", fpCA.Cert, fpCA.Key); err != nil {
		return p, err
	}
	proxy, err := fpCA.Issue(pki.LeafRequest{CommonName: "front-proxy-client", Client: true, Validity: 365 * 24 * time.Hour})
	if err != nil {
		return p, err
	}
	if p.proxyCert, p.proxyKey, err = pki.WriteKeyPair(dir, "front-proxy-client", proxy.Cert, proxy.Key); err != nil {
		return p, err
	}
	// The apiserver's own identity towards kubelets (logs, exec, metrics),
	// as kubeadm's apiserver-kubelet-client.
	kc, err := ca.Issue(pki.LeafRequest{CommonName: "kube-apiserver-kubelet-client", Organizations: []string{KubeadmClusterAdmins}, Client: true, Validity: 365 * 24 * time.Hour})
	if err != nil {
		return p, err
	}
	if p.kubeletClientCert, p.kubeletClientKey, err = pki.WriteKeyPair(dir, "apiserver-kubelet-client", kc.Cert, kc.Key); err != nil {
		return p, err
	}
	if p.etcd, err = writeEtcdPKI(dir); err != nil {
		return p, err
	}
	sa, err := pki.NewSigningKey()
	if err != nil {
		return p, err
	}
	saPub, err := pki.PublicKeyPEM(sa)
	if err != nil {
		return p, err
	}
	p.saPub = filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(p.saPub, saPub, 0o644); err != nil {
		return p, err
	}
	saKey, err := pki.KeyPEM(sa)
	if err != nil {
		return p, err
	}
	p.saKey = filepath.Join(dir, "sa.key")
	return p, os.WriteFile(p.saKey, saKey, 0o600)
}

// WriteKubeconfig issues a client certificate for user (in groups) and
// writes a kubeconfig for it into the control plane's folder.
func (cp *ControlPlane) WriteKubeconfig(name, user string, groups ...string) (string, error) {
	return cp.WriteKubeconfigAt(name, cp.Endpoint, user, groups...)
}

// WriteKubeconfigAt is WriteKubeconfig for another server: a proxy in front
// of the apiserver whose serving certificate the cluster CA signed.
func (cp *ControlPlane) WriteKubeconfigAt(name, server, user string, groups ...string) (string, error) {
	kp, err := cp.ca.Issue(pki.LeafRequest{CommonName: user, Organizations: groups, Client: true, Validity: 365 * 24 * time.Hour})
	if err != nil {
		return "", err
	}
	keyPEM, err := pki.KeyPEM(kp.Key)
	if err != nil {
		return "", err
	}
	return cp.writeKubeconfig(name, server, &clientcmdapi.AuthInfo{ClientCertificateData: pki.CertPEM(kp.Cert), ClientKeyData: keyPEM})
}

// WriteTokenKubeconfig writes a kubeconfig that presents a bearer token to
// server.
func (cp *ControlPlane) WriteTokenKubeconfig(name, server, token string) (string, error) {
	return cp.writeKubeconfig(name, server, &clientcmdapi.AuthInfo{Token: token})
}

func (cp *ControlPlane) writeKubeconfig(name, server string, auth *clientcmdapi.AuthInfo) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sitegrid-lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: pki.CertPEM(cp.ca.Cert)}
	cfg.AuthInfos[name] = auth
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: "sitegrid-lab", AuthInfo: name}
	cfg.CurrentContext = name
	path := filepath.Join(cp.Dir, "kubeconfig", name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", err
	}
	return path, os.Chmod(path, 0o600)
}

// IssueCert signs a certificate with the cluster CA, for components that
// serve or authenticate like cluster members (the edge hub).
func (cp *ControlPlane) IssueCert(req pki.LeafRequest) (*pki.KeyPair, error) {
	if req.Validity == 0 {
		req.Validity = 365 * 24 * time.Hour
	}
	return cp.ca.Issue(req)
}

// RESTConfig returns an admin client configuration.
func (cp *ControlPlane) RESTConfig() *rest.Config { return rest.CopyConfig(cp.adminREST) }

// Clientset returns an admin clientset.
func (cp *ControlPlane) Clientset() (kubernetes.Interface, error) {
	return kubernetes.NewForConfig(cp.RESTConfig())
}

// Components lists the running processes.
func (cp *ControlPlane) Components() []Component { return append([]Component(nil), cp.components...) }

// Stop stops every component, newest first, and waits until they are gone.
func (cp *ControlPlane) Stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		cp.procs[i].Stop(10 * time.Second)
	}
	cp.procs = nil
}

// Exited returns the first component that has exited, if any, and how.
func (cp *ControlPlane) Exited() (name string, exited bool, err error) {
	for _, p := range cp.procs {
		if done, err := p.Exited(); done {
			return p.Spec.Name, true, err
		}
	}
	return "", false, nil
}

func (cp *ControlPlane) run(spec process.Spec, port int, progress io.Writer) (*process.Process, error) {
	spec.LogFile = filepath.Join(cp.Dir, "logs", spec.Name+".log")
	p, err := process.Start(spec)
	if err != nil {
		return nil, err
	}
	cp.procs = append(cp.procs, p)
	cp.components = append(cp.components, Component{Name: spec.Name, PID: p.PID(), Port: port, Log: spec.LogFile})
	fmt.Fprintf(progress, "started %s (pid %d, port %d)\n", spec.Name, p.PID(), port)
	return p, nil
}

func (cp *ControlPlane) startAPIServer(ctx context.Context, cfg Config, p pkiPaths, port int, etcdURL string, progress io.Writer) error {
	// Node names resolve nowhere on this machine: without a tunnel the
	// apiserver dials nodes by address. With one, by name (kube-apiserver's
	// own default order): sites may reuse private ranges, a name is one
	// node. (A repeated flag would add to the list, not replace it.)
	preferred := "InternalIP,ExternalIP,Hostname"
	if cfg.EgressSocket != "" {
		preferred = "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP"
	}
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--etcd-cafile=" + p.etcd.ca, "--etcd-certfile=" + p.etcd.apiserverClientCert, "--etcd-keyfile=" + p.etcd.apiserverClientKey,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--advertise-address=" + DefaultAdvertiseAddress,
		"--tls-cert-file=" + p.apiserverCert, "--tls-private-key-file=" + p.apiKey,
		"--client-ca-file=" + p.ca,
		"--requestheader-client-ca-file=" + p.frontProxyCA,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p.proxyCert, "--proxy-client-key-file=" + p.proxyKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saPub, "--service-account-signing-key-file=" + p.saKey,
		"--service-cluster-ip-range=" + DefaultServiceCIDR,
		"--authorization-mode=Node,RBAC",
		// kubeadm's admission: the apiserver's default plugins plus
		// NodeRestriction, which confines a kubelet's writes to its own Node
		// and the pods bound to it.
		"--enable-admission-plugins=NodeRestriction",
		"--enable-bootstrap-token-auth=true",
		"--kubelet-client-certificate=" + p.kubeletClientCert, "--kubelet-client-key=" + p.kubeletClientKey,
		"--kubelet-preferred-address-types=" + preferred,
		"--allow-privileged=true",
		"--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000",
		"--profiling=false",
		"--cert-dir=" + filepath.Join(cp.Dir, "certs"),
	}
	if cfg.EgressSocket != "" {
		file, err := writeEgressSelector(cp.Dir, cfg.EgressSocket)
		if err != nil {
			return err
		}
		args = append(args, "--egress-selector-config-file="+file)
	}
	proc, err := cp.run(process.Spec{Name: KubeAPIServer, Path: cfg.Bin.Path(kubebin.KubeAPIServer),
		Args: append(args, cfg.APIServerArgs...)}, port, progress)
	if err != nil {
		return err
	}
	admin, err := cp.WriteKubeconfig("admin", "sitegrid-admin", "system:masters")
	if err != nil {
		return err
	}
	cp.AdminKubeconfig = admin
	if cp.adminREST, err = clientcmd.BuildConfigFromFlags("", admin); err != nil {
		return err
	}
	cp.adminREST.QPS, cp.adminREST.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(cp.adminREST)
	if err != nil {
		return err
	}
	return waitReady(ctx, proc, func(ctx context.Context) error {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%v: %s", err, body)
		}
		return nil
	})
}

func (cp *ControlPlane) startControllerManager(ctx context.Context, cfg Config, p pkiPaths, progress io.Writer) error {
	kc, err := cp.WriteKubeconfig("controller-manager", "system:kube-controller-manager")
	if err != nil {
		return err
	}
	port, err := FreePort()
	if err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + p.servingCert, "--tls-private-key-file=" + p.servKey,
		"--client-ca-file=" + p.ca, "--requestheader-client-ca-file=" + p.frontProxyCA,
		"--cluster-name=kubernetes",
		// kubeadm's controller set: the defaults plus the bootstrap token
		// signer and cleaner, so nodes can join with bootstrap tokens.
		"--controllers=*,bootstrapsigner,tokencleaner",
		"--leader-elect=true",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + p.saKey,
		"--root-ca-file=" + p.ca,
		"--cluster-signing-cert-file=" + p.ca, "--cluster-signing-key-file=" + p.caKey,
		"--allocate-node-cidrs=true", "--cluster-cidr=" + DefaultClusterCIDR, "--node-cidr-mask-size=24",
		"--service-cluster-ip-range=" + DefaultServiceCIDR,
		"--kube-api-qps=500", "--kube-api-burst=1000",
		"--profiling=false",
	}
	proc, err := cp.run(process.Spec{Name: KubeControllerManager, Path: cfg.Bin.Path(kubebin.KubeControllerManager),
		Args: append(args, cfg.ControllerManagerArgs...)}, port, progress)
	if err != nil {
		return err
	}
	return cp.waitHealthz(ctx, proc, port)
}

func (cp *ControlPlane) startScheduler(ctx context.Context, cfg Config, p pkiPaths, progress io.Writer) error {
	kc, err := cp.WriteKubeconfig("scheduler", "system:kube-scheduler")
	if err != nil {
		return err
	}
	port, err := FreePort()
	if err != nil {
		return err
	}
	proc, err := cp.run(process.Spec{Name: KubeScheduler, Path: cfg.Bin.Path(kubebin.KubeScheduler), Args: []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + p.servingCert, "--tls-private-key-file=" + p.servKey,
		"--client-ca-file=" + p.ca, "--requestheader-client-ca-file=" + p.frontProxyCA,
		"--leader-elect=true", "--profiling=false",
	}}, port, progress)
	if err != nil {
		return err
	}
	return cp.waitHealthz(ctx, proc, port)
}

// KwokNodeAnnotation marks simulated nodes. Value kwokShared: the shared
// kwok is their kubelet; kwokOwn: a kwok of their own (StartNodeKwok).
const (
	KwokNodeAnnotation = "kwok.x-k8s.io/node"
	kwokShared         = "fake"
	kwokOwn            = "own"
)

func (cp *ControlPlane) startKwok(ctx context.Context, cfg Config, progress io.Writer) error {
	stages, err := exec.CommandContext(ctx, cfg.Bin.Path(kubebin.KwokStages)).Output()
	if err != nil {
		return fmt.Errorf("kwok stages: %w", err)
	}
	stagesFile := filepath.Join(cp.Dir, "kwok-stages.yaml")
	if err := os.WriteFile(stagesFile, stages, 0o644); err != nil {
		return err
	}
	cp.kwokStages, cp.kwokLeaseSeconds, cp.kwokBin = stagesFile, cfg.NodeLeaseSeconds, cfg.Bin.Path(kubebin.Kwok)
	// kwok stands in for every kubelet of the simulated sites at once, so it
	// cannot be confined by the Node authorizer the way one kubelet is.
	kc, err := cp.WriteKubeconfig("kwok", "sitegrid-kwok", "system:masters")
	if err != nil {
		return err
	}
	cp.kwokKubeconfig = kc
	if cfg.NoSharedKwok {
		return nil
	}
	proc, port, err := cp.startKwokProcess(Kwok, cp.kwokKubeconfig, "--manage-nodes-with-annotation-selector="+KwokNodeAnnotation+"="+kwokShared, progress)
	if err != nil {
		return err
	}
	cp.procs = append(cp.procs, proc)
	cp.components = append(cp.components, Component{Name: Kwok, PID: proc.PID(), Port: port, Log: proc.Spec.LogFile})
	return cp.waitKwok(ctx, proc, port)
}

func (cp *ControlPlane) startKwokProcess(name, kubeconfig, selectFlag string, progress io.Writer) (*process.Process, int, error) {
	port, err := FreePort()
	if err != nil {
		return nil, 0, err
	}
	p, err := cp.startKwokOn(name, kubeconfig, selectFlag, port, nil)
	if err != nil {
		return nil, 0, err
	}
	fmt.Fprintf(progress, "started %s (pid %d, port %d)\n", name, p.PID(), port)
	return p, port, nil
}

func (cp *ControlPlane) startKwokOn(name, kubeconfig, selectFlag string, port int, extra []string) (*process.Process, error) {
	return process.Start(process.Spec{Name: name, Path: cp.kwokBin, LogFile: filepath.Join(cp.Dir, "logs", name+".log"), Args: append([]string{
		"--kubeconfig=" + kubeconfig,
		"--config=" + cp.kwokStages,
		"--manage-all-nodes=false",
		selectFlag,
		"--node-lease-duration-seconds=" + strconv.Itoa(cp.kwokLeaseSeconds),
		"--cidr=" + DefaultClusterCIDR,
		"--server-address=127.0.0.1:" + strconv.Itoa(port),
	}, extra...)})
}

func (cp *ControlPlane) waitKwok(ctx context.Context, proc *process.Process, port int) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	return waitReady(ctx, proc, process.HTTPReady(hc, fmt.Sprintf("http://127.0.0.1:%d/healthz", port)))
}

// KwokServing makes a node's kwok serve a kubelet's API as a kubelet does:
// HTTPS on Port (published as the Node's kubelet port) with a serving
// certificate, and the logs, exec, attach and port-forward its Configs
// (kwok's ClusterLogs, ClusterExec, ... documents) describe.
type KwokServing struct {
	Port              int
	CertFile, KeyFile string
	Configs           []string
}

// StartNodeKwokServing is StartNodeKwokVia with the kubelet API served
// as serving says. Only the caller stops the process.
func (cp *ControlPlane) StartNodeKwokServing(ctx context.Context, node, kubeconfig string, serving KwokServing) (*process.Process, error) {
	extra := []string{"--node-port=" + strconv.Itoa(serving.Port), "--tls-cert-file=" + serving.CertFile, "--tls-private-key-file=" + serving.KeyFile}
	for _, c := range serving.Configs {
		extra = append(extra, "--config="+c)
	}
	proc, err := cp.startKwokOn("kwok-"+node, kubeconfig, "--manage-single-node="+node, serving.Port, extra)
	if err != nil {
		return nil, err
	}
	if err := cp.waitHealthz(ctx, proc, serving.Port); err != nil {
		proc.Stop(5 * time.Second)
		return nil, err
	}
	return proc, nil
}

// StartNodeKwok runs a kubelet of its own, a kwok managing only this node,
// for a node created with Node.OwnKubelet. Stopping the returned process is
// a node outage: its Lease is no longer renewed and the node lifecycle
// controller marks it NotReady. The caller stops it; so does Stop.
func (cp *ControlPlane) StartNodeKwok(ctx context.Context, node string) (*process.Process, error) {
	proc, err := cp.StartNodeKwokVia(ctx, node, cp.kwokKubeconfig)
	if err != nil {
		return nil, err
	}
	cp.procs = append(cp.procs, proc)
	return proc, nil
}

// StartNodeKwokVia is StartNodeKwok with the kubelet's own kubeconfig (for
// example the node's credential, pointed at its edge hub). Only the caller
// stops the process.
func (cp *ControlPlane) StartNodeKwokVia(ctx context.Context, node, kubeconfig string) (*process.Process, error) {
	proc, port, err := cp.startKwokProcess("kwok-"+node, kubeconfig, "--manage-single-node="+node, io.Discard)
	if err != nil {
		return nil, err
	}
	if err := cp.waitKwok(ctx, proc, port); err != nil {
		proc.Stop(5 * time.Second)
		return nil, err
	}
	return proc, nil
}

func (cp *ControlPlane) waitHealthz(ctx context.Context, proc *process.Process, port int) error {
	pool := x509.NewCertPool()
	pool.AddCert(cp.ca.Cert)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	return waitReady(ctx, proc, process.HTTPReady(hc, fmt.Sprintf("https://127.0.0.1:%d/healthz", port)))
}

func waitReady(ctx context.Context, p *process.Process, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return p.WaitReady(ctx, 200*time.Millisecond, check)
}

// PortFree reports, with a message a user can act on, whether port is taken.
func PortFree(port int) error {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return fmt.Errorf("port %d on 127.0.0.1 is already in use (another lab or apiserver?): stop what holds it, or pick another port: %w", port, err)
	}
	return l.Close()
}
