package ctl

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	"github.com/sitegrid/sitegrid/internal/controller/site"
)

// kubeClient builds a client from --kubeconfig, $KUBECONFIG or ~/.kube/config.
func kubeClient(kubeconfig string) (client.Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := sitev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := gridv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := appsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}

func newSiteCommand() *cobra.Command {
	var kubeconfig string
	cmd := &cobra.Command{Use: "site", Short: "Edge sites: NodeUnits and NodeGroups"}
	cmd.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", "", "Path of the kubeconfig (default: $KUBECONFIG or ~/.kube/config).")
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List units and groups with their ready rates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := kubeClient(kubeconfig)
			if err != nil {
				return err
			}
			var units sitev1.NodeUnitList
			if err := c.List(cmd.Context(), &units); err != nil {
				return fmt.Errorf("list NodeUnits: %w", err)
			}
			var groups sitev1.NodeGroupList
			if err := c.List(cmd.Context(), &groups); err != nil {
				return fmt.Errorf("list NodeGroups: %w", err)
			}
			return printSites(cmd.OutOrStdout(), units.Items, groups.Items)
		},
	})
	return cmd
}

func printSites(out io.Writer, units []sitev1.NodeUnit, groups []sitev1.NodeGroup) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UNIT\tTYPE\tREADY\tGROUPS\tNOT READY")
	for i := range units {
		u := &units[i]
		var in []string
		for j := range groups {
			if site.GroupHasUnit(&groups[j], u) {
				in = append(in, groups[j].Name)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Name, u.Spec.Type, orDash(u.Status.ReadyRate), orDash(strings.Join(in, ",")), orDash(strings.Join(u.Status.NotReadyNodes, ",")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tUNITS\tREADY UNITS\tCONFLICT")
	ready := map[string]bool{}
	for i := range units {
		ready[units[i].Name] = meta.IsStatusConditionTrue(units[i].Status.Conditions, site.UnitReady)
	}
	for i := range groups {
		g := &groups[i]
		n := 0
		for _, u := range g.Status.NodeUnits {
			if ready[u] {
				n++
			}
		}
		conflict := "-"
		if c := meta.FindStatusCondition(g.Status.Conditions, site.GroupConflict); c != nil && c.Status == "True" {
			conflict = c.Message
		}
		fmt.Fprintf(tw, "%s\t%d\t%d/%d\t%s\n", g.Name, g.Status.UnitNumber, n, len(g.Status.NodeUnits), conflict)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
