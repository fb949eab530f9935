package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sitegrid/sitegrid/internal/lab/netns"
	"github.com/sitegrid/sitegrid/internal/lab/sitenet"
	"github.com/sitegrid/sitegrid/internal/process"
)

// Every real node runs sitegrid-dns (cmd/sitegrid-dns, docs/dns.md) on its
// address, and its kubelet's clusterDNS points there: the cluster domain is
// answered by CoreDNS's kubernetes plugin reading through the node's hub
// (with the ServiceAccount kubeadm gives CoreDNS), other names are
// forwarded to the site's own resolver, which the lab runs on the site's
// LAN at 198.18.<site>.254 (what a shop's router is) and which knows a few
// names of an "outside" zone, example.test.

const (
	dnsBinary = "sitegrid-dns"
	// ClusterDomain is the lab's cluster domain.
	ClusterDomain = "cluster.local"
	// ExternalName is a name only the sites' resolvers know, and
	// ExternalAddress its address: what a node forwards.
	ExternalName    = "www.example.test"
	ExternalAddress = "198.18.200.1"
	// DNS's /healthz and /readyz inside a node's (or site's) namespace.
	dnsProbes = "127.0.0.1:10293"
)

// siteResolverIP is the resolver of the site nodeIP is in.
func siteResolverIP(nodeIP string) net.IP {
	ip := net.ParseIP(nodeIP).To4()
	return net.IPv4(ip[0], ip[1], ip[2], 254)
}

// corednsRBAC is kubeadm's ClusterRole system:coredns (sitegrid's extra
// reads for unit-local names are config/rbac's sitegrid:dns).
func corednsRBAC() *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
}

// dnsSetup is what the first real node makes for all: the binary and
// CoreDNS's identity; e.bootMu is held.
func (e *edge) dnsSetup(ctx context.Context) error {
	if e.dnsBin != "" {
		return nil
	}
	if _, err := e.admin.RbacV1().ClusterRoles().Create(ctx, corednsRBAC(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRole system:coredns: %w", err)
	}
	token, err := e.serviceAccountToken(ctx, "kube-system", "coredns", "system:coredns")
	if err != nil {
		return err
	}
	bin, err := findBinary(ctx, e.workdir, dnsBinary, "")
	if err != nil {
		return err
	}
	e.dnsToken, e.dnsBin = token, bin
	return nil
}

// writeDNSConfig writes the node's Corefile and the kubeconfig of its DNS,
// direct to the cloud until the node joins (the join points it at the hub,
// as it does the kubelet's).
func (e *edge) writeDNSConfig(ctx context.Context, en *edgeNode) error {
	e.bootMu.Lock()
	err := e.dnsSetup(ctx)
	e.bootMu.Unlock()
	if err != nil {
		return err
	}
	name := "dns-" + en.name
	kc, err := e.cp.WriteTokenKubeconfig(name, en.cloudURL(), e.dnsToken)
	if err != nil {
		return err
	}
	en.real.dnsKubeconfig = kc
	en.real.corefile = filepath.Join(en.dir, "Corefile")
	return os.WriteFile(en.real.corefile, []byte(nodeCorefile(en.name, en.ip, kc, name, siteResolverIP(en.ip).String())), 0o600)
}

// nodeCorefile is a node's DNS configuration: the cluster domain through
// the hub, five-second TTLs so a change reaches clients within seconds,
// everything else to the site's resolver.
func nodeCorefile(node, ip, kubeconfig, kubeContext, resolver string) string {
	return strings.NewReplacer("NODE", node, "ADDRESS", ip, "KUBECONFIG", kubeconfig, "CONTEXT", kubeContext, "RESOLVER", resolver,
		"DOMAIN", ClusterDomain, "PROBES", dnsProbes).Replace(`DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind ADDRESS
    errors
    probes PROBES
    prometheus 127.0.0.1:9153
    sitegridunits DOMAIN {
        kubeconfig KUBECONFIG
        node NODE
    }
    kubestore
    kubernetes DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig KUBECONFIG CONTEXT
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
    loadbalance
}
.:53 {
    bind ADDRESS
    errors
    probes PROBES
    prometheus 127.0.0.1:9153
    forward . RESOLVER
    cache 30
}
`)
}

// startDNS runs the node's DNS in its namespace.
func (en *edgeNode) startDNS(ctx context.Context, bin string) error {
	p, err := process.Start(process.Spec{Name: "sitegrid-dns-" + en.name, Path: "nsenter",
		Args:    []string{"--net=" + netns.Path(en.netns), "--", bin, "-conf", en.real.corefile},
		Env:     en.superEdgeClientEnv(),
		LogFile: filepath.Join(en.dir, "dns.log")})
	if err != nil {
		return err
	}
	return en.adopt(ctx, p, process.HTTPReady(en.netnsClient(), "http://"+dnsProbes+"/readyz"), &en.dns)
}

// ensureSiteResolver starts the site's resolver once; hostMu is held.
func (e *edge) ensureSiteResolver(ctx context.Context, site, nodeIP string) error {
	if p, ok := e.resolvers[site]; ok && !exited(p) {
		return nil
	}
	ip := siteResolverIP(nodeIP).String()
	corefile := filepath.Join(e.workdir, controlPlaneDir, "resolver-"+site+".Corefile")
	conf := ".:53 {\n    bind " + ip + "\n    errors\n    probes " + dnsProbes + "\n    hosts {\n        " + ExternalAddress + " " + ExternalName + "\n    }\n}\n"
	if err := os.WriteFile(corefile, []byte(conf), 0o600); err != nil {
		return err
	}
	ns := sitenet.Namespace(e.workdir, site)
	p, err := process.Start(process.Spec{Name: "resolver-" + site, Path: "ip", Args: netns.CommandArgs(ns, e.dnsBin, "-conf", corefile),
		LogFile: filepath.Join(e.workdir, controlPlaneDir, "logs", "resolver-"+site+".log")})
	if err != nil {
		return err
	}
	client := netnsHTTPClient(ns)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := p.WaitReady(wctx, 100*time.Millisecond, process.HTTPReady(client, "http://"+dnsProbes+"/readyz")); err != nil {
		p.Stop(5 * time.Second)
		return fmt.Errorf("resolver of %s: %w\n%s", site, err, process.LogTail(p.Spec.LogFile, 10))
	}
	if e.resolvers == nil {
		e.resolvers = map[string]*process.Process{}
	}
	e.resolvers[site] = p
	return nil
}
