// Package hubrbac holds the RBAC of a node's hub credential (user
// sitegrid-hub:<node>): for installers, the lab, and the manager, whose
// reports webhook admits a hub's writes by that user name. The hub itself
// does not link it.
package hubrbac

import (
	"context"
	"fmt"

	certificatesv1 "k8s.io/api/certificates/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/client-go/kubernetes"

	"github.com/sitegrid/sitegrid/internal/health"
	"github.com/sitegrid/sitegrid/internal/hub/certs"
)

// UserPrefix starts the user name of every hub credential (the hub's
// certificate package names it, where the hub asks for its credential).
const UserPrefix = certs.ClientUserPrefix

// User is the user name of a node's hub credential; its Roles are named
// after it.
func User(node string) string { return UserPrefix + node }

// Cluster is everything the hub credential of node may do: impersonate
// that node's kubelet (user system:node:<node> in the groups system:nodes
// and system:authenticated), read what its service topology rules need:
// Nodes (it watches its own and those sharing its topology values) and
// Services (of which it keeps only the topology keys), and ask for its
// renewed certificates (CertificateSigningRequests, which sitegrid-manager
// approves only for this node's names).
func Cluster(node string) (*rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding) {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: User(node)},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"users"}, Verbs: []string{"impersonate"}, ResourceNames: []string{"system:node:" + node}},
			{APIGroups: []string{""}, Resources: []string{"groups"}, Verbs: []string{"impersonate"}, ResourceNames: []string{"system:nodes", "system:authenticated"}},
			{APIGroups: []string{""}, Resources: []string{"nodes", "services"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{certificatesv1.GroupName}, Resources: []string{"certificatesigningrequests"}, Verbs: []string{"create", "get", "list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: User(node)}},
	}
	return role, binding
}

// Health is what the hub credential of node may do for distributed
// health, in the health.Namespace only: read the gossip key Secret (that one
// Secret), and read, create and renew the unit Leases its member publishes.
// (RBAC cannot confine a create to a name: the manager's reports webhook
// admits a hub's write of its own unit's report only; docs/health.md.)
func Health(node string) (*rbacv1.Role, *rbacv1.RoleBinding) {
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: User(node), Namespace: health.Namespace},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}, ResourceNames: []string{health.GossipKeySecret}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
		},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: health.Namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: User(node)}},
	}
	return role, binding
}

// Grant gives node's hub credential its RBAC (Cluster and Health); what
// exists already is left as it is. An administrator's step, as creating the
// node's join token is: the manager holds no right to grant impersonation.
func Grant(ctx context.Context, client kubernetes.Interface, node string) error {
	role, binding := Cluster(node)
	if _, err := client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRole %s: %w", role.Name, err)
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRoleBinding %s: %w", binding.Name, err)
	}
	hrole, hbinding := Health(node)
	if _, err := client.RbacV1().Roles(hrole.Namespace).Create(ctx, hrole, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create Role %s: %w", hrole.Name, err)
	}
	if _, err := client.RbacV1().RoleBindings(hbinding.Namespace).Create(ctx, hbinding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create RoleBinding %s: %w", hbinding.Name, err)
	}
	return nil
}

// Revoke removes what Grant made.
func Revoke(ctx context.Context, client kubernetes.Interface, node string) error {
	name := User(node)
	for _, del := range []func() error{
		func() error { return client.RbacV1().ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{}) },
		func() error { return client.RbacV1().ClusterRoles().Delete(ctx, name, metav1.DeleteOptions{}) },
		func() error {
			return client.RbacV1().RoleBindings(health.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
		},
		func() error { return client.RbacV1().Roles(health.Namespace).Delete(ctx, name, metav1.DeleteOptions{}) },
	} {
		if err := del(); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}
