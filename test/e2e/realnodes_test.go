package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sitegrid/sitegrid/internal/controller/certificates"
	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/lab/images"
	"github.com/sitegrid/sitegrid/internal/lab/machine"
	"github.com/sitegrid/sitegrid/internal/lab/netns"
	"github.com/sitegrid/sitegrid/internal/process"
	"github.com/sitegrid/sitegrid/internal/rbac/hubrbac"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// echoWeb is the seeds' echo container on the lab's echoserver image, with
// what a rebooted node must serve from its hub: the default service-account
// token volume (every pod has it), a ConfigMap volume and a Secret env var.
func echoWeb() corev1.Container {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	return corev1.Container{
		Name: "web", Image: images.Echoserver,
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		Env: []corev1.EnvVar{field("NODE_NAME", "spec.nodeName"), field("POD_NAME", "metadata.name"),
			field("POD_NAMESPACE", "metadata.namespace"), field("POD_IP", "status.podIP"),
			{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "web-secret"}, Key: "password"}}}},
		VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/web"}},
	}
}

var answeredBy = regexp.MustCompile(`(?m)^\s*node name:\s*(\S+)`)

// TestLabRealNodes: real kubelets with real containers, in the seeds'
// layout (a site of one node, a site of two; the second node of site-2
// joins with `lab add-node --real`). Traffic to a ServiceGrid's Service
// stays in the caller's unit, 20 requests from every node; a plain Service
// lists both units' pods, and only the caller's site's answer (sites cannot
// reach each other). Then the factory scenario: site-2 is partitioned and
// both its nodes are rebooted while cut off. Its pods run again from what
// the hubs kept (token, ConfigMap, Secret, at their old addresses); from a
// pod of the site the Service answers by ClusterIP and the pod on the other
// node by pod IP; the cloud shows the nodes NotReady while distributed
// health keeps the pods in the endpoints; after `lab heal` the cloud's view
// of the pods is current and no pod restarts again.
func TestLabRealNodes(t *testing.T) {
	testenv.Binaries(t)
	if why := lab.RealNodesAvailable(); why != nil {
		t.Skipf("real nodes cannot run here (%v); CI runs this test as root", why)
	}
	// The kubelets change host-wide sysctls; the lab puts them back (this
	// cleanup runs after the lab's own).
	sysctls := readSysctls(t)
	t.Cleanup(func() {
		if after := readSysctls(t); !maps.Equal(after, sysctls) {
			t.Errorf("sysctls after lab down: %v, before the lab: %v", after, sysctls)
		}
	})
	start := time.Now()
	l := upLab(t, "--sites", "2", "--nodes-per-site", "1", "--real-nodes", "--node-monitor-grace-period", "8s")
	t.Logf("lab up with 2 real nodes: %s", time.Since(start).Round(100*time.Millisecond))
	added := time.Now()
	l.must("lab", "add-node", lab.NodeName("site-2", 1), "--real", "--labels", lab.SiteLabel+"=site-2")
	t.Logf("lab add-node --real to Ready: %s", time.Since(added).Round(100*time.Millisecond))
	ctx := context.Background()
	_, admin, c := l.clients()
	site1, site2 := lab.UnitName("site-1"), lab.UnitName("site-2")
	nodes := []string{lab.NodeName("site-1", 0), lab.NodeName("site-2", 0), lab.NodeName("site-2", 1)}
	unitOf := map[string]string{nodes[0]: site1, nodes[1]: site2, nodes[2]: site2}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		n, err := admin.CoreV1().Nodes().Get(ctx, nodes[2], metav1.GetOptions{})
		if err != nil || n.Labels[lab.GroupName] != site2 {
			return fmt.Errorf("the added node is not in %s yet (%v)", site2, err)
		}
		return nil
	})
	for _, n := range nodes {
		if st := edgeNode(t, l.workdir, n); !st.Real || st.ContainerdSocket == "" {
			t.Fatalf("lab status: %s is not a real node: %+v", n, st)
		}
		node, err := admin.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := node.Status.NodeInfo; got.KubeletVersion != "v1.37.1" || !strings.HasPrefix(got.ContainerRuntimeVersion, "containerd://") {
			t.Errorf("node %s runs kubelet %q on %q, want the real kubelet v1.37.1 on containerd", n, got.KubeletVersion, got.ContainerRuntimeVersion)
		}
	}

	seedTopology(t, c, echoWeb(), corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}}}})
	seedDNS(t, c, nodes)
	// The kubelet's own API: no anonymous access; the admin's certificate is
	// authenticated by the CA and authorized by SubjectAccessReview.
	kubeletAPI(t, l, nodes[0])

	createAll(t, c,
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web-config", Namespace: topoNS}, Data: map[string]string{"greeting": "hello"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-secret", Namespace: topoNS}, StringData: map[string]string{"password": "s3cret"}},
	)
	var pods map[string]corev1.Pod // by name
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) error {
		perUnit, _, err := readyEndpoints(ctx, admin)
		if err != nil {
			return err
		}
		if len(perUnit[site1]) != 2 || len(perUnit[site2]) != 2 {
			return fmt.Errorf("ready pods per unit: %v, want 2 in each", perUnit)
		}
		pods, err = webPods(ctx, admin)
		return err
	})
	svcIP, allIP := serviceIP(t, admin, "web-svc"), serviceIP(t, admin, "web-all")

	// 20 requests from every node to the ServiceGrid's Service: all answered
	// by pods of the node's own unit.
	for _, n := range nodes {
		answers := l.requests(n, svcIP, 20, 3)
		if len(answers) != 20 {
			t.Errorf("%s: %d of 20 requests to web-svc answered", n, len(answers))
		}
		for _, by := range answers {
			if unitOf[by] != unitOf[n] {
				t.Errorf("%s (unit %s): web-svc answered by a pod on %s (unit %s)", n, unitOf[n], by, unitOf[by])
			}
		}
	}
	// The plain Service lists both units' pods on every node; the sites'
	// networks do not meet, so only the caller's site answers.
	for _, n := range nodes {
		r, err := iptablesRoutes(ctx, edgeNode(t, l.workdir, n).Netns)
		if err != nil {
			t.Fatal(err)
		}
		if got := r[topoNS+"/web-all"]; len(got) != 4 {
			t.Errorf("%s routes web-all to %v, want the pods of both units", n, got)
		}
		if got := r[topoNS+"/web-svc"]; len(got) != 2 {
			t.Errorf("%s routes web-svc to %v, want its unit's 2 pods", n, got)
		}
	}
	answers := l.requests(nodes[0], allIP, 20, 1)
	for _, by := range answers {
		if unitOf[by] != site1 {
			t.Errorf("web-all from %s answered across sites, by %s", nodes[0], by)
		}
	}
	if len(answers) == 20 {
		t.Errorf("all 20 requests to web-all from %s were answered; half its endpoints are in a site it cannot reach", nodes[0])
	}

	checkDNS(t, l, admin, nodes, unitOf, "online")
	// A Service made in the cloud while online: how long until a pod of an
	// edge node resolves it (the watch through the node's hub to its DNS).
	early := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "early", Namespace: topoNS},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}
	created := time.Now()
	if _, err := admin.CoreV1().Services(topoNS).Create(ctx, early, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	earlyIP := serviceIP(t, admin, "early")
	testenv.Eventually(t, 10*time.Second, func(ctx context.Context) error {
		got, err := l.lookup(ctx, nodes[1], "early."+topoNS+".svc."+lab.ClusterDomain)
		if err != nil || !slices.Equal(got, []string{earlyIP}) {
			return fmt.Errorf("a Service made online resolves on %s to %v (%v), want %s", nodes[1], got, err, earlyIP)
		}
		return nil
	})
	t.Logf("Service created in the cloud to resolving from a pod of %s through its hub: %s", nodes[1], time.Since(created).Round(10*time.Millisecond))

	// A user's image, loaded into every real node, runs; an image the lab
	// does not have fails to pull as it would from a registry.
	tool, err := images.BusyboxImage(ctx, images.BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	tool.Ref = "example.com/team/tool:v1"
	archive := filepath.Join(t.TempDir(), "tool.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := images.WriteArchive(f, tool); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if out := l.must("lab", "load-image", archive); !strings.Contains(out, tool.Ref) || !strings.Contains(out, nodes[2]) {
		t.Errorf("lab load-image: %s, want %s loaded into every node", out, tool.Ref)
	}
	for name, image := range map[string]string{"tool": tool.Ref, "missing": "sitegrid.local/missing:v1"} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: topoNS}, Spec: corev1.PodSpec{NodeName: nodes[0],
			Containers: []corev1.Container{{Name: name, Image: image, Command: []string{"sleep", "3600"}}}}}
		if _, err := admin.CoreV1().Pods(topoNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		for name, want := range map[string]string{"tool": "Running", "missing": "ErrImagePull"} {
			p, err := admin.CoreV1().Pods(topoNS).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			got := string(p.Status.Phase)
			if cs := p.Status.ContainerStatuses; len(cs) == 1 && cs[0].State.Waiting != nil {
				got = cs[0].State.Waiting.Reason
			}
			if got != want && !(want == "ErrImagePull" && got == "ImagePullBackOff") {
				return fmt.Errorf("pod %s is %s, want %s", name, got, want)
			}
		}
		return nil
	})

	joinAndLeave(t, l, admin, nodes, nodes[0], svcIP, unitOf)

	// The factory: site-2 loses the cloud, then power, twice over.
	before := map[string]corev1.Pod{}
	for name, p := range pods {
		if unitOf[p.Spec.NodeName] == site2 {
			before[name] = p
		}
	}
	l.must("lab", "partition", "site-2")
	testenv.Eventually(t, 30*time.Second, func(context.Context) error {
		out := l.must("lab", "status")
		for _, n := range nodes[1:] {
			if !lineHas(out, n, "cut", "offline") {
				return fmt.Errorf("lab status does not show %s offline:\n%s", n, out)
			}
		}
		return nil
	})
	// A Service made while the site is cut off, resolved there once healed.
	late := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: topoNS},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := admin.CoreV1().Services(topoNS).Create(ctx, late, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rebooted := time.Now()
	l.must("lab", "reboot", "site-2")
	t.Logf("lab reboot of site-2 (2 nodes, offline): %s", time.Since(rebooted).Round(100*time.Millisecond))
	// Each pod runs again in a new sandbox, at its old address, and
	// answers; from a pod of the site, the Service and the other node's pod.
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) error {
		for name, p := range before {
			pid, err := l.podPID(ctx, p.Spec.NodeName, name)
			if err != nil {
				return err
			}
			peer := otherPod(before, p.Spec.NodeName)
			for _, target := range []string{svcIP + ":80", peer.Status.PodIP + ":8080"} {
				out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/proc/" + pid + "/ns/net", "--"}, wget(target, 2)...)...).CombinedOutput()
				if err != nil {
					return fmt.Errorf("from pod %s: wget %s: %v: %s", name, target, err, out)
				}
				m := answeredBy.FindStringSubmatch(string(out))
				if m == nil || unitOf[m[1]] != site2 {
					return fmt.Errorf("from pod %s: %s answered by %v:\n%s", name, target, m, out)
				}
			}
		}
		return nil
	})
	t.Logf("offline reboot to every pod of site-2 serving: %s", time.Since(rebooted).Round(100*time.Millisecond))
	checkDNS(t, l, admin, nodes[1:], unitOf, "partitioned, after the site's reboot")
	// The cloud sees the nodes NotReady; health keeps their pods in the
	// endpoints.
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		for _, n := range nodes[1:] {
			node, err := admin.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if controlplane.NodeReady(node) {
				return fmt.Errorf("the cloud still sees %s Ready", n)
			}
		}
		perUnit, _, err := readyEndpoints(ctx, admin)
		if err != nil {
			return err
		}
		if len(perUnit[site2]) != 2 {
			return fmt.Errorf("site-2's pods ready in the cloud: %v, want both kept", perUnit[site2])
		}
		return nil
	})

	l.must("lab", "heal")
	healed := time.Now()
	lateIP := serviceIP(t, admin, "late")
	testenv.Eventually(t, 10*time.Second, func(ctx context.Context) error {
		got, err := l.lookup(ctx, nodes[1], "late."+topoNS+".svc."+lab.ClusterDomain)
		if err != nil || !slices.Equal(got, []string{lateIP}) {
			return fmt.Errorf("after the heal, the Service made while partitioned resolves to %v (%v), want %s", got, err, lateIP)
		}
		return nil
	})
	t.Logf("heal to the Service made while partitioned resolving on site-2: %s", time.Since(healed).Round(100*time.Millisecond))
	// The cloud's view catches up: the pods were restarted once, by the
	// reboot, and kept their addresses.
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) error {
		now, err := webPods(ctx, admin)
		if err != nil {
			return err
		}
		for name, was := range before {
			p, ok := now[name]
			if !ok {
				return fmt.Errorf("pod %s is gone", name)
			}
			if p.Status.PodIP != was.Status.PodIP {
				return fmt.Errorf("pod %s is at %s, was at %s", name, p.Status.PodIP, was.Status.PodIP)
			}
			if restarts(p) != restarts(was)+1 || !podReady(&p) {
				return fmt.Errorf("pod %s: %d restarts, ready %v; want %d, ready", name, restarts(p), podReady(&p), restarts(was)+1)
			}
		}
		return nil
	})
	// And it stays that way.
	time.Sleep(20 * time.Second)
	now, err := webPods(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	for name, was := range before {
		if p := now[name]; restarts(p) != restarts(was)+1 {
			t.Errorf("pod %s restarted again after the heal: %d restarts", name, restarts(p))
		}
	}

	// A killed lab: its daemons die with it, its shims and containers do
	// not; `lab down` ends them and puts the host back.
	state, err := lab.ReadState(l.workdir)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(state.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func(context.Context) error {
		if process.Alive(state.PID) {
			return fmt.Errorf("lab owner %d still alive", state.PID)
		}
		return nil
	})
	l.must("lab", "down")
	if roots, err := machine.CgroupRoots(l.workdir); err != nil || len(roots) != 0 {
		t.Errorf("cgroups left after lab down of a killed lab: %v (%v)", roots, err)
	}
	if left, err := netns.List(l.workdir); err != nil || len(left) != 0 {
		t.Errorf("network namespaces left after lab down of a killed lab: %v (%v)", left, err)
	}
	if out, _ := exec.Command("pgrep", "-f", l.workdir).Output(); len(out) != 0 {
		t.Errorf("processes of the killed lab left after lab down: %s", out)
	}
}

// joinAndLeave checks that every real node joined as a user's does: its
// hub's certificates came from CSRs its join token and its hub made, which
// sitegrid-manager approved; then `lab leave` gives node's kubelet and
// kube-proxy their kubeconfigs back byte for byte and the node keeps
// working directly (its lease renewed, its pods not restarted, kube-proxy
// programming the cloud's unfiltered view), and `lab join` joins it again.
func joinAndLeave(t *testing.T, l labRunner, admin kubernetes.Interface, nodes []string, node, svcIP string, unitOf map[string]string) {
	t.Helper()
	ctx := context.Background()
	csrs, err := admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	approvedFor := map[string][]string{} // node -> requesters of approved hub CSRs
	for _, c := range csrs.Items {
		for _, cond := range c.Status.Conditions {
			if cond.Type == certificatesv1.CertificateApproved && cond.Reason == certificates.ReasonApproved && len(c.Status.Certificate) > 0 {
				for _, n := range nodes {
					if strings.Contains(cond.Message, "node "+n+",") {
						approvedFor[n] = append(approvedFor[n], c.Spec.SignerName+" by "+requesterKind(c.Spec.Username))
					}
				}
			}
		}
	}
	for _, n := range nodes {
		if st := edgeNode(t, l.workdir, n); !st.Joined || st.Hub != "online" {
			t.Errorf("%s: joined %v, hub %s; want joined, online", n, st.Joined, st.Hub)
		}
		slices.Sort(approvedFor[n])
		if want := []string{"kubernetes.io/kube-apiserver-client by a join token", "kubernetes.io/kubelet-serving by its hub"}; !slices.Equal(approvedFor[n], want) {
			t.Errorf("%s: approved hub CSRs %v, want %v", n, approvedFor[n], want)
		}
	}
	kubeconfigs := map[string]string{
		"kubelet":    filepath.Join(l.workdir, "controlplane", "kubeconfig", "kubelet-"+node+".kubeconfig"),
		"kube-proxy": filepath.Join(l.workdir, "controlplane", "kubeconfig", "kube-proxy-"+node+".kubeconfig"),
	}
	backups := map[string][]byte{}
	for name, path := range kubeconfigs {
		found, _ := filepath.Glob(filepath.Join(l.workdir, "controlplane", "nodes", node, "root", "var", "lib", "sitegrid-hub", "join", "backup", "*-"+filepath.Base(path)))
		if len(found) != 1 {
			t.Fatalf("backup of the %s kubeconfig: %v", name, found)
		}
		if backups[name], err = os.ReadFile(found[0]); err != nil {
			t.Fatal(err)
		}
	}
	podsBefore, err := webPods(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	left := time.Now()
	l.must("lab", "leave", node)
	for name, path := range kubeconfigs {
		now, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(now, backups[name]) {
			t.Errorf("after lab leave the %s kubeconfig is not the original:\n%s", name, now)
		}
	}
	if st := edgeNode(t, l.workdir, node); st.Joined || st.Hub != "none" {
		t.Errorf("after lab leave %s: joined %v, hub %s", node, st.Joined, st.Hub)
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
		lease, err := admin.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if lease.Spec.RenewTime == nil || !lease.Spec.RenewTime.After(left.Add(5*time.Second)) {
			return fmt.Errorf("the kubelet of %s has not renewed its lease directly since it left", node)
		}
		n, err := admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil || !controlplane.NodeReady(n) {
			return fmt.Errorf("%s is not Ready after it left (%v)", node, err)
		}
		return nil
	})
	// kube-proxy now reads the cloud itself: the hub's service topology no
	// longer confines web-svc to the unit, its rules list every pod.
	routesOfWebSvc := func(want int) {
		t.Helper()
		testenv.Eventually(t, time.Minute, func(ctx context.Context) error {
			r, err := iptablesRoutes(ctx, edgeNode(t, l.workdir, node).Netns)
			if err != nil {
				return err
			}
			if got := r[topoNS+"/web-svc"]; len(got) != want {
				return fmt.Errorf("%s routes web-svc to %v, want %d pods", node, got, want)
			}
			return nil
		})
	}
	routesOfWebSvc(4)
	answers := l.requests(node, svcIP, 20, 2)
	if len(answers) == 0 {
		t.Errorf("after lab leave, no request from %s to web-svc answered", node)
	}
	for _, by := range answers {
		if unitOf[by] != unitOf[node] {
			t.Errorf("after lab leave, web-svc from %s answered across sites, by %s", node, by)
		}
	}
	podsAfter, err := webPods(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range podsBefore {
		if p.Spec.NodeName == node && restarts(podsAfter[name]) != restarts(p) {
			t.Errorf("pod %s restarted when its node left", name)
		}
	}
	l.must("lab", "join", node)
	if st := edgeNode(t, l.workdir, node); !st.Joined || st.Hub != "online" {
		t.Errorf("after lab join %s: joined %v, hub %s", node, st.Joined, st.Hub)
	}
	routesOfWebSvc(2) // through the hub again: the unit's pods only
}

func requesterKind(user string) string {
	switch {
	case strings.HasPrefix(user, "system:bootstrap:"):
		return "a join token"
	case strings.HasPrefix(user, hubrbac.UserPrefix):
		return "its hub"
	}
	return user
}

// kubeletAPI checks a real node's kubelet serves its API as in production.
func kubeletAPI(t *testing.T, l labRunner, node string) {
	t.Helper()
	st := edgeNode(t, l.workdir, node)
	kubeconfig, _, _ := l.clients()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := rest.TLSConfigFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	anonymous := admin.Clone()
	anonymous.Certificates, anonymous.GetClientCertificate = nil, nil
	get := func(tlsConfig *tls.Config) (int, error) {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return netns.Dial(ctx, st.Netns, addr) }}}
		resp, err := hc.Get("https://" + net.JoinHostPort(st.IP, "10250") + "/pods")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// The serving certificate is the cluster CA's, for the node's address.
	if code, err := get(anonymous); err != nil || code != http.StatusUnauthorized {
		t.Errorf("the kubelet of %s, anonymously: %d (%v), want 401", node, code, err)
	}
	if code, err := get(admin); err != nil || code != http.StatusOK {
		t.Errorf("the kubelet of %s, as the cluster admin: %d (%v), want 200", node, code, err)
	}
}

func webPods(ctx context.Context, cs kubernetes.Interface) (map[string]corev1.Pod, error) {
	list, err := cs.CoreV1().Pods(topoNS).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		return nil, err
	}
	out := map[string]corev1.Pod{}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out[p.Name] = p
		}
	}
	return out, nil
}

func otherPod(pods map[string]corev1.Pod, node string) corev1.Pod {
	for _, p := range pods {
		if p.Spec.NodeName != node {
			return p
		}
	}
	return corev1.Pod{}
}

func restarts(p corev1.Pod) int32 {
	if len(p.Status.ContainerStatuses) == 0 {
		return -1
	}
	return p.Status.ContainerStatuses[0].RestartCount
}

func serviceIP(t *testing.T, cs kubernetes.Interface, name string) string {
	t.Helper()
	svc, err := cs.CoreV1().Services(topoNS).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc.Spec.ClusterIP
}

// requests sends n HTTP requests from node's network to ip:80 and returns,
// for each one answered, the node of the pod that answered.
func (l labRunner) requests(node, ip string, n, timeoutSeconds int) []string {
	l.t.Helper()
	var by []string
	for range n {
		out, err := l.run(append([]string{"lab", "exec", node, "--"}, wget(ip, timeoutSeconds)...)...)
		if err != nil {
			continue
		}
		if m := answeredBy.FindStringSubmatch(out); m != nil {
			by = append(by, m[1])
		}
	}
	return by
}

func readSysctls(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, key := range machine.KubeletSysctls {
		v, err := os.ReadFile(filepath.Join("/proc/sys", key))
		if err != nil {
			t.Fatal(err)
		}
		out[key] = strings.TrimSpace(string(v))
	}
	return out
}

// wget is an HTTP GET of target (host[:port]) with busybox, bounded by
// busybox's timeout (its wget's own -T crashes on some failures).
func wget(target string, seconds int) []string {
	return []string{images.BusyboxPath, "timeout", fmt.Sprint(seconds), images.BusyboxPath, "wget", "-q", "-O-", "http://" + target + "/"}
}

// podPID finds the process of a pod's running container on a real node,
// through the node's containerd.
func (l labRunner) podPID(ctx context.Context, node, pod string) (string, error) {
	return l.containerPID(ctx, node, pod, "web")
}

// containerPID is the host pid of a running container of pod on node.
func (l labRunner) containerPID(ctx context.Context, node, pod, container string) (string, error) {
	socket := edgeNode(l.t, l.workdir, node).ContainerdSocket
	ctr := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", socket, "-n", "k8s.io"}, args...)...).Output()
		return string(out), err
	}
	tasks, err := ctr("tasks", "ls")
	if err != nil {
		return "", fmt.Errorf("ctr tasks ls on %s: %w", node, err)
	}
	for _, line := range strings.Split(tasks, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "RUNNING" {
			continue
		}
		info, err := ctr("containers", "info", f[0])
		if err != nil {
			continue
		}
		var c struct {
			Labels map[string]string `json:"Labels"`
		}
		if json.Unmarshal([]byte(info), &c) == nil && c.Labels["io.kubernetes.pod.name"] == pod && c.Labels["io.kubernetes.container.name"] == container {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("pod %s runs no container on %s yet", pod, node)
}
