package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	"github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/lab/images"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// The edge DNS checks of TestLabRealNodes (docs/dns.md): every real node
// runs sitegrid-dns, and a pod asks it through its own resolv.conf.

const dnsClient = "dns-client"

// seedDNS adds what the DNS checks resolve: a headless ServiceGrid over
// the web pods, a StatefulSetGrid with its headless ServiceGrid (SuperEdge's
// unit-local names), and on every node a pod to ask from.
func seedDNS(t *testing.T, c client.Client, nodes []string) {
	t.Helper()
	demo := map[string]string{"app": "demo"}
	sleeper := func(name string) corev1.Container {
		return corev1.Container{Name: name, Image: images.Busybox, Command: []string{"sleep", "360000"}}
	}
	objs := []client.Object{
		&gridv1.ServiceGrid{ObjectMeta: metav1.ObjectMeta{Name: "webh", Namespace: topoNS}, Spec: gridv1.ServiceGridSpec{
			GridUniqKey: lab.GroupName, Template: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "web"}},
		}},
		&gridv1.ServiceGrid{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: topoNS}, Spec: gridv1.ServiceGridSpec{
			GridUniqKey: lab.GroupName, Template: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: demo},
		}},
		&gridv1.StatefulSetGrid{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: topoNS}, Spec: gridv1.StatefulSetGridSpec{
			GridUniqKey: lab.GroupName,
			Template: &appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), ServiceName: "demo-svc", Selector: &metav1.LabelSelector{MatchLabels: demo},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: demo}, Spec: corev1.PodSpec{Containers: []corev1.Container{sleeper("demo")}}}},
		}},
	}
	for _, n := range nodes {
		objs = append(objs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: dnsClient + "-" + n, Namespace: topoNS},
			Spec: corev1.PodSpec{NodeName: n, Containers: []corev1.Container{sleeper(dnsClient)}}})
	}
	createAll(t, c, objs...)
}

// lookup asks the DNS of pod's node, from inside the pod (its network and
// its resolv.conf), for name's addresses.
func (l labRunner) lookup(ctx context.Context, node, name string) ([]string, error) {
	pod := dnsClient + "-" + node
	pid, err := l.containerPID(ctx, node, pod, dnsClient)
	if err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, "nsenter", "-t", pid, "-n", "-m", "--", "/bin/busybox", "timeout", "3", "/bin/busybox", "nslookup", "-type=a", name).CombinedOutput()
	answers := nslookupAddresses(string(out))
	if len(answers) == 0 {
		return nil, fmt.Errorf("from pod %s: nslookup %s: %v\n%s", pod, name, err, out)
	}
	return answers, nil
}

// nslookupAddresses are the answers busybox nslookup printed (after the
// server's own lines).
func nslookupAddresses(out string) []string {
	var addrs []string
	_, answers, _ := strings.Cut(out, "\n\n")
	for _, line := range strings.Split(answers, "\n") {
		if a, ok := strings.CutPrefix(strings.TrimSpace(line), "Address:"); ok {
			addrs = append(addrs, strings.TrimSpace(a))
		}
	}
	slices.Sort(addrs)
	return addrs
}

// checkDNS resolves, from a pod of every node, the ServiceGrid's Service
// (its ClusterIP), the headless ServiceGrid (only the node's unit's pods),
// the StatefulSetGrid's unit-local name and the pod's own per-unit name
// (the pod of the node's unit) and an outside name (forwarded to the
// site's resolver).
func checkDNS(t *testing.T, l labRunner, admin kubernetes.Interface, nodes []string, unitOf map[string]string, when string) {
	t.Helper()
	svcIP := serviceIP(t, admin, "web-svc")
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) error {
		perUnit, _, err := readyEndpoints(ctx, admin)
		if err != nil {
			return err
		}
		demoPods, err := admin.CoreV1().Pods(topoNS).List(ctx, metav1.ListOptions{LabelSelector: "app=demo"})
		if err != nil {
			return err
		}
		for _, n := range nodes {
			unit := unitOf[n]
			var webIPs, demoIPs []string
			var demoPod string
			for _, ep := range perUnit[unit] {
				webIPs = append(webIPs, strings.TrimSuffix(ep, ":8080"))
			}
			slices.Sort(webIPs)
			for _, p := range demoPods.Items {
				if p.Labels[gridv1.LabelGridUnit] == unit && p.Status.PodIP != "" {
					demoIPs, demoPod = append(demoIPs, p.Status.PodIP), p.Name
				}
			}
			if demoPod == "" {
				return fmt.Errorf("unit %s has no demo pod with an address yet", unit)
			}
			for name, want := range map[string][]string{
				// The plain per-unit name of the same pod.
				demoPod + ".demo-svc." + topoNS + ".svc." + lab.ClusterDomain: demoIPs,
				"web-svc." + topoNS + ".svc." + lab.ClusterDomain:             {svcIP},
				"webh-svc." + topoNS + ".svc." + lab.ClusterDomain:            webIPs,
				"demo-0.demo-svc." + topoNS + ".svc." + lab.ClusterDomain:     demoIPs,
				lab.ExternalName: {lab.ExternalAddress},
			} {
				got, err := l.lookup(ctx, n, name)
				if err != nil {
					return err
				}
				if len(want) == 0 || !slices.Equal(got, want) {
					return fmt.Errorf("%s, on %s (unit %s): %s resolves to %v, want %v", when, n, unit, name, got, want)
				}
			}
		}
		return nil
	})
}
