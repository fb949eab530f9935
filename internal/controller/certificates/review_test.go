package certificates

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sitegrid/sitegrid/internal/jointoken"
)

// csrFor builds a CSR as the apiserver would hold it: the request, the
// signer, and the requester the apiserver recorded.
func csrFor(t *testing.T, signer, user string, groups []string, tmpl x509.CertificateRequest, usages ...certificatesv1.KeyUsage) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "hub-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: signer, Usages: usages, Username: user, Groups: groups,
		},
	}
}

var (
	clientUsages  = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
	servingUsages = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
	tokenOfA      = []string{"system:bootstrappers", jointoken.Group, jointoken.NodeGroup("edge-a.shop-1"), "system:authenticated"}
)

func hubClient(node string) x509.CertificateRequest {
	return x509.CertificateRequest{Subject: pkix.Name{CommonName: "sitegrid-hub:" + node}}
}

func hubServing(node string, dns []string, ips ...string) x509.CertificateRequest {
	r := x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}}, DNSNames: dns}
	for _, ip := range ips {
		r.IPAddresses = append(r.IPAddresses, net.ParseIP(ip))
	}
	return r
}

func TestReview(t *testing.T) {
	nodeA := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-a.shop-1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "198.18.1.1"}, {Type: corev1.NodeHostName, Address: "edge-a"},
	}}}
	const a, b = "edge-a.shop-1", "edge-b.shop-1"
	client, serving := certificatesv1.KubeAPIServerClientSignerName, certificatesv1.KubeletServingSignerName
	for _, tc := range []struct {
		name string
		csr  *certificatesv1.CertificateSigningRequest
		// ours: the approver decides; refused: why not ("" approves).
		ours    bool
		refused string
	}{
		{name: "join token of the node asks for its client credential", ours: true,
			csr: csrFor(t, client, "system:bootstrap:abcdef", tokenOfA, hubClient(a), clientUsages...)},
		{name: "the node's kubelet asks for its hub's credential", ours: true,
			csr: csrFor(t, client, "system:node:"+a, []string{"system:nodes", "system:authenticated"}, hubClient(a), clientUsages...)},
		{name: "the hub renews its credential", ours: true,
			csr: csrFor(t, client, "sitegrid-hub:"+a, []string{"system:authenticated"}, hubClient(a), clientUsages...)},
		{name: "the hub asks for its serving certificate", ours: true,
			csr: csrFor(t, serving, "sitegrid-hub:"+a, nil, hubServing(a, []string{"localhost", a, "edge-a"}, "127.0.0.1", "198.18.1.1"), servingUsages...)},
		{name: "a token of node A asks for node B's credential", ours: true, refused: "is not node " + b,
			csr: csrFor(t, client, "system:bootstrap:abcdef", tokenOfA, hubClient(b), clientUsages...)},
		{name: "a token bound to no node", ours: true, refused: "is not node",
			csr: csrFor(t, client, "system:bootstrap:abcdef", []string{"system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token"}, hubClient(a), clientUsages...)},
		{name: "someone else's group claimed without a bootstrap user", ours: true, refused: "is not node",
			csr: csrFor(t, client, "mallory", []string{jointoken.NodeGroup(a)}, hubClient(a), clientUsages...)},
		{name: "hub of B asks for A's credential", ours: true, refused: "is not node",
			csr: csrFor(t, client, "sitegrid-hub:"+b, nil, hubClient(a), clientUsages...)},
		{name: "a credential with a group", ours: true, refused: "organizations",
			csr: csrFor(t, client, "sitegrid-hub:"+a, nil, x509.CertificateRequest{Subject: pkix.Name{CommonName: "sitegrid-hub:" + a, Organization: []string{"system:masters"}}}, clientUsages...)},
		{name: "a credential for server auth too", ours: true, refused: "usage",
			csr: csrFor(t, client, "sitegrid-hub:"+a, nil, hubClient(a), certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth, certificatesv1.UsageServerAuth)},
		{name: "a serving certificate naming another host", ours: true, refused: `DNS name "apiserver"`,
			csr: csrFor(t, serving, "sitegrid-hub:"+a, nil, hubServing(a, []string{"apiserver"}, "127.0.0.1"), servingUsages...)},
		{name: "a serving certificate with another node's IP", ours: true, refused: "IP 198.18.1.2",
			csr: csrFor(t, serving, "sitegrid-hub:"+a, nil, hubServing(a, nil, "198.18.1.2"), servingUsages...)},
		{name: "a serving certificate asked for by a token", ours: false,
			csr: csrFor(t, serving, "system:bootstrap:abcdef", tokenOfA, hubServing(a, nil, "127.0.0.1"), servingUsages...)},
		{name: "a hub asks for another node's serving certificate", ours: true, refused: "is not node " + b,
			csr: csrFor(t, serving, "sitegrid-hub:"+a, nil, hubServing(b, nil, "127.0.0.1"), servingUsages...)},
		{name: "the kubelet's own serving CSR is another approver's", ours: false,
			csr: csrFor(t, serving, "system:node:"+a, []string{"system:nodes"}, hubServing(a, nil, "198.18.1.1"), servingUsages...)},
		{name: "a user's client certificate is another approver's", ours: false,
			csr: csrFor(t, client, "alice", nil, x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice"}}, clientUsages...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, ours, err := parseHubRequest(tc.csr)
			if ours != tc.ours {
				t.Fatalf("ours = %v, want %v (err %v)", ours, tc.ours, err)
			}
			if !ours {
				return
			}
			if err == nil {
				node := nodeA
				if r.node != a {
					node = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: r.node}}
				}
				err = review(tc.csr, r, node)
			}
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refused != "" && err == nil:
				t.Fatalf("approved, want refused with %q", tc.refused)
			case tc.refused != "" && !strings.Contains(err.Error(), tc.refused):
				t.Fatalf("refused with %q, want %q", err, tc.refused)
			}
		})
	}
	t.Run("the node does not exist", func(t *testing.T) {
		csr := csrFor(t, client, "system:bootstrap:abcdef", tokenOfA, hubClient(a), clientUsages...)
		r, _, _ := parseHubRequest(csr)
		if err := review(csr, r, nil); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("got %v", err)
		}
	})
}
