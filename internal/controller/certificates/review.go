// Package certificates approves the CertificateSigningRequests of nodes'
// hubs: the client credential sitegrid-hub:<node> and the hub's serving
// certificate (the node's kubelet-serving identity). Signing stays with the
// cluster's own signers (kube-controller-manager --cluster-signing-*).
package certificates

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/sitegrid/sitegrid/internal/hub/certs"
	"github.com/sitegrid/sitegrid/internal/jointoken"
	"github.com/sitegrid/sitegrid/internal/rbac/hubrbac"
)

// A hub's request, as the approver sees it.
type hubRequest struct {
	// node the request is for, by its names (not by its requester).
	node string
	// serving: the hub's serving certificate; else its client credential.
	serving bool
	x509    *x509.CertificateRequest
}

const nodeUserPrefix = "system:node:"

// parseHubRequest says whether csr is a hub's and for which node: a client
// certificate for a sitegrid-hub: user, or a kubelet-serving certificate a
// hub asks for. Everything else is another approver's (the kubelet's own
// CSRs included) and is left alone.
func parseHubRequest(csr *certificatesv1.CertificateSigningRequest) (*hubRequest, bool, error) {
	switch csr.Spec.SignerName {
	case certificatesv1.KubeAPIServerClientSignerName:
	case certificatesv1.KubeletServingSignerName:
		if !strings.HasPrefix(csr.Spec.Username, hubrbac.UserPrefix) {
			return nil, false, nil
		}
	default:
		return nil, false, nil
	}
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, csr.Spec.SignerName == certificatesv1.KubeletServingSignerName, errors.New("spec.request holds no PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, csr.Spec.SignerName == certificatesv1.KubeletServingSignerName, fmt.Errorf("spec.request: %w", err)
	}
	if csr.Spec.SignerName == certificatesv1.KubeAPIServerClientSignerName {
		node, ok := strings.CutPrefix(req.Subject.CommonName, hubrbac.UserPrefix)
		if !ok {
			return nil, false, nil
		}
		return &hubRequest{node: node, x509: req}, true, nil
	}
	node, ok := strings.CutPrefix(req.Subject.CommonName, nodeUserPrefix)
	if !ok {
		return nil, true, fmt.Errorf("a hub's serving certificate is for %s<node>, not %q", nodeUserPrefix, req.Subject.CommonName)
	}
	return &hubRequest{node: node, serving: true, x509: req}, true, nil
}

// review approves (nil) or says why not: the requester must be the node's
// own identity (its kubelet, its hub, or a join token bound to it; only its
// hub for the serving certificate), and every name must be exactly the
// node's.
func review(csr *certificatesv1.CertificateSigningRequest, r *hubRequest, node *corev1.Node) error {
	if node == nil {
		return fmt.Errorf("node %s does not exist", r.node)
	}
	if !requesterIsNode(csr, r) {
		return fmt.Errorf("requester %q (groups %s) is not node %s's: a hub's CSR comes from the node's join token, kubelet or hub", csr.Spec.Username, strings.Join(csr.Spec.Groups, ","), r.node)
	}
	req := r.x509
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return errors.New("the request names e-mail addresses or URIs")
	}
	if r.serving {
		if !slices.Equal(req.Subject.Organization, []string{"system:nodes"}) {
			return fmt.Errorf("organizations %v: a hub's serving certificate is in system:nodes only", req.Subject.Organization)
		}
		if err := servingNamesOf(node, req); err != nil {
			return err
		}
		return usagesWithin(csr.Spec.Usages, certificatesv1.UsageServerAuth)
	}
	if len(req.Subject.Organization) > 0 {
		return fmt.Errorf("organizations %v: a hub's credential is in no group (its RBAC is its user's)", req.Subject.Organization)
	}
	if len(req.DNSNames) > 0 || len(req.IPAddresses) > 0 {
		return errors.New("a client certificate names no hosts")
	}
	return usagesWithin(csr.Spec.Usages, certificatesv1.UsageClientAuth)
}

// requesterIsNode: the hub of the node renews both certificates; its join
// token or its kubelet may ask for the first client credential.
func requesterIsNode(csr *certificatesv1.CertificateSigningRequest, r *hubRequest) bool {
	user, groups := csr.Spec.Username, csr.Spec.Groups
	if user == hubrbac.User(r.node) {
		return true
	}
	if r.serving {
		return false
	}
	if user == nodeUserPrefix+r.node && slices.Contains(groups, "system:nodes") {
		return true
	}
	if strings.HasPrefix(user, "system:bootstrap:") && slices.Contains(groups, "system:bootstrappers") {
		for _, g := range groups {
			if n, ok := jointoken.NodeOfGroup(g); ok && n == r.node {
				return true
			}
		}
	}
	return false
}

// servingNamesOf checks that every DNS name and IP of req is the node's:
// its status addresses, or loopback (where the node's components reach the
// hub).
func servingNamesOf(node *corev1.Node, req *x509.CertificateRequest) error {
	if len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		return errors.New("a serving certificate needs a DNS name or an IP")
	}
	addrs := make([]certs.NodeAddress, len(node.Status.Addresses))
	for i, a := range node.Status.Addresses {
		addrs[i] = certs.NodeAddress{Type: string(a.Type), Address: a.Address}
	}
	dnsNames, addresses := certs.ServingNames(node.Name, addrs)
	names, ips := map[string]bool{}, map[string]bool{}
	for _, n := range dnsNames {
		names[n] = true
	}
	for _, ip := range addresses {
		ips[ip.String()] = true
	}
	for _, n := range req.DNSNames {
		if !names[n] {
			return fmt.Errorf("DNS name %q is not node %s's", n, node.Name)
		}
	}
	for _, ip := range req.IPAddresses {
		if !ips[ip.String()] {
			return fmt.Errorf("IP %s is not node %s's", ip, node.Name)
		}
	}
	return nil
}

// usagesWithin: the one extended usage the certificate is for, plus the
// key usages of a TLS key.
func usagesWithin(usages []certificatesv1.KeyUsage, ext certificatesv1.KeyUsage) error {
	if !slices.Contains(usages, ext) {
		return fmt.Errorf("usages %v lack %q", usages, ext)
	}
	for _, u := range usages {
		if u != ext && u != certificatesv1.UsageDigitalSignature && u != certificatesv1.UsageKeyEncipherment {
			return fmt.Errorf("usage %q is more than a hub's certificate needs", u)
		}
	}
	return nil
}
