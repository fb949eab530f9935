// Package jointoken is how an edge node proves, once, which node it is:
// a Kubernetes bootstrap token (the Secret kubeadm token create makes)
// whose extra group names the node, and the cluster CA's public key hash
// the joining hub pins, as kubeadm join --discovery-token-ca-cert-hash.
//
// The binding travels in the token's identity, not in its Secret: the
// apiserver puts the token's groups in every CertificateSigningRequest it
// creates (spec.groups), so sitegrid-manager's approver reads the node a
// token is for without reading Secrets of kube-system.
package jointoken

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	certutil "k8s.io/client-go/util/cert"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/sitegrid/sitegrid/internal/hub/certs"
	"github.com/sitegrid/sitegrid/internal/rbac/hubrbac"
)

// Group is the extra group of every sitegrid join token: bound to
// system:node-bootstrapper (config/rbac), so the token may create
// CertificateSigningRequests and nothing else.
const Group = "system:bootstrappers:sitegrid-hub"

// NodeGroup is the extra group binding a token to node: node names are DNS
// subdomains, whose dots a group name may not hold, so they become colons
// (which a node name cannot hold: the mapping is one to one).
func NodeGroup(node string) string {
	return Group + ":" + strings.ReplaceAll(node, ".", ":")
}

// NodeOfGroup is the node a NodeGroup names, if group is one.
func NodeOfGroup(group string) (string, bool) {
	rest, ok := strings.CutPrefix(group, Group+":")
	if !ok || rest == "" {
		return "", false
	}
	return strings.ReplaceAll(rest, ":", "."), true
}

// Create makes a bootstrap token for node valid for ttl, as kubeadm token
// create --groups Group,NodeGroup(node) would: usable for authentication
// and to verify the cluster-info ConfigMap's signature. It returns the
// token, id.secret.
func Create(ctx context.Context, client kubernetes.Interface, node string, ttl time.Duration) (string, error) {
	if errs := validation.IsDNS1123Subdomain(node); len(errs) > 0 {
		return "", fmt.Errorf("node name %q: %s", node, strings.Join(errs, "; "))
	}
	if ttl <= 0 {
		return "", fmt.Errorf("a join token needs a positive lifetime, not %s", ttl)
	}
	if err := bootstraputil.ValidateBootstrapGroupName(NodeGroup(node)); err != nil {
		return "", fmt.Errorf("node name %q makes no bootstrap group: %w", node, err)
	}
	token, err := bootstraputil.GenerateBootstrapToken()
	if err != nil {
		return "", err
	}
	id, secret, _ := strings.Cut(token, ".")
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstraputil.BootstrapTokenSecretName(id), Namespace: metav1.NamespaceSystem},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		StringData: map[string]string{
			bootstrapapi.BootstrapTokenIDKey:               id,
			bootstrapapi.BootstrapTokenSecretKey:           secret,
			bootstrapapi.BootstrapTokenDescriptionKey:      "sitegrid-hub join of node " + node,
			bootstrapapi.BootstrapTokenExpirationKey:       time.Now().Add(ttl).UTC().Format(time.RFC3339),
			bootstrapapi.BootstrapTokenUsageAuthentication: "true",
			bootstrapapi.BootstrapTokenUsageSigningKey:     "true",
			bootstrapapi.BootstrapTokenExtraGroupsKey:      Group + "," + NodeGroup(node),
		},
	}
	if _, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create bootstrap token: %w", err)
	}
	return token, nil
}

// Prepare is an administrator's half of node's join: its hub credential's
// RBAC (hubrbac.Grant: the manager holds no right to grant impersonation)
// and a token bound to it, valid ttl.
func Prepare(ctx context.Context, client kubernetes.Interface, node string, ttl time.Duration) (string, error) {
	if err := hubrbac.Grant(ctx, client, node); err != nil {
		return "", err
	}
	return Create(ctx, client, node, ttl)
}

// CAHashes are the pins of the CA certificates in caPEM.
func CAHashes(caPEM []byte) ([]string, error) {
	cas, err := certutil.ParseCertsPEM(caPEM)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(cas))
	for i, ca := range cas {
		out[i] = certs.PublicKeyPin(ca)
	}
	return out, nil
}
