package ctl

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"github.com/sitegrid/sitegrid/internal/jointoken"
)

func newNodeCommand() *cobra.Command {
	var kubeconfig, server string
	var ttl time.Duration
	cmd := &cobra.Command{Use: "node", Short: "Edge nodes: joining them to the cluster"}
	cmd.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", "", "Path of the kubeconfig (default: $KUBECONFIG or ~/.kube/config).")
	join := &cobra.Command{
		Use:   "join-command NODE",
		Short: "Grant NODE's hub its RBAC, make a bootstrap token bound to NODE, and print the sitegrid-hub join to run on it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rules := clientcmd.NewDefaultClientConfigLoadingRules()
			rules.ExplicitPath = kubeconfig
			cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
			if err != nil {
				return fmt.Errorf("kubeconfig: %w", err)
			}
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return err
			}
			// The pin of the CA a joining node will discover.
			info, err := cs.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(cmd.Context(), bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("kube-public/cluster-info, which joining nodes discover the CA from (kubeadm makes it): %w", err)
			}
			ci, err := clientcmd.Load([]byte(info.Data[bootstrapapi.KubeConfigKey]))
			if err != nil {
				return fmt.Errorf("cluster-info: %w", err)
			}
			var hashes []string
			for _, c := range ci.Clusters {
				h, err := jointoken.CAHashes(c.CertificateAuthorityData)
				if err != nil {
					return fmt.Errorf("cluster-info's CA: %w", err)
				}
				hashes = append(hashes, h...)
				if server == "" {
					server = c.Server
				}
			}
			token, err := jointoken.Prepare(cmd.Context(), cs, args[0], ttl)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sitegrid-hub join --server %s --token %s --discovery-token-ca-cert-hash %s --node-name %s\n",
				server, token, strings.Join(hashes, ","), args[0])
			return nil
		},
	}
	join.Flags().StringVar(&server, "server", "", "The apiserver URL as the node reaches it (default: cluster-info's).")
	join.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "How long the token may be used.")
	cmd.AddCommand(join)
	return cmd
}
