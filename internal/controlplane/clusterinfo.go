package controlplane

import (
	"context"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
)

// publishClusterInfo does what kubeadm's bootstrap-token phase does for
// discovery: the cluster-info ConfigMap in kube-public (the apiserver's
// address and CA; the controller-manager's bootstrapsigner signs it with
// every signing bootstrap token) and anonymous read access to it alone,
// so a joining node can check the CA against its pin before trusting it.
func publishClusterInfo(ctx context.Context, cs kubernetes.Interface, endpoint, caFile string) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	kubeconfig, err := clientcmd.Write(clientcmdapi.Config{
		Clusters: map[string]*clientcmdapi.Cluster{"": {Server: endpoint, CertificateAuthorityData: ca}},
	})
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: bootstrapapi.ConfigMapClusterInfo, Namespace: metav1.NamespacePublic},
		Data:       map[string]string{bootstrapapi.KubeConfigKey: string(kubeconfig)},
	}
	if _, err := cs.CoreV1().ConfigMaps(metav1.NamespacePublic).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create ConfigMap cluster-info: %w", err)
	}
	const name = "kubeadm:bootstrap-signer-clusterinfo"
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespacePublic},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}, ResourceNames: []string{bootstrapapi.ConfigMapClusterInfo}}},
	}
	if _, err := cs.RbacV1().Roles(metav1.NamespacePublic).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Role %s: %w", name, err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespacePublic},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "system:anonymous"}},
	}
	if _, err := cs.RbacV1().RoleBindings(metav1.NamespacePublic).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create RoleBinding %s: %w", name, err)
	}
	return nil
}

// KubeadmClusterAdmins is the group kubeadm puts the apiserver's kubelet
// client certificate in, bound to cluster-admin by the ClusterRoleBinding
// of the same name: the kubelets' webhook authorizer then allows the
// apiserver's logs, exec, attach and port-forward.
const KubeadmClusterAdmins = "kubeadm:cluster-admins"

// bindClusterAdmins does what kubeadm's init does for the group
// kubeadm:cluster-admins.
func bindClusterAdmins(ctx context.Context, cs kubernetes.Interface) error {
	_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: KubeadmClusterAdmins},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: KubeadmClusterAdmins}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("bind %s to cluster-admin: %w", KubeadmClusterAdmins, err)
	}
	return nil
}
