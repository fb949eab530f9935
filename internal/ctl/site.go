package ctl

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	healthcontroller "github.com/sitegrid/sitegrid/internal/controller/health"
	"github.com/sitegrid/sitegrid/internal/health"
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
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := coordinationv1.AddToScheme(scheme); err != nil {
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
	var maxAutonomy time.Duration
	healthCmd := &cobra.Command{
		Use:   "health UNIT",
		Short: "Show a unit's distributed health: each member's view, the verdicts, and what the control plane does with them",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := kubeClient(kubeconfig)
			if err != nil {
				return err
			}
			return printHealth(cmd, c, args[0], maxAutonomy)
		},
	}
	healthCmd.Flags().DurationVar(&maxAutonomy, "max-autonomy", 24*time.Hour, "The manager's --max-autonomy, to tell what it decides.")
	cmd.AddCommand(healthCmd)
	return cmd
}

func printHealth(cmd *cobra.Command, c client.Client, unit string, maxAutonomy time.Duration) error {
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	lease := &coordinationv1.Lease{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: health.Namespace, Name: unit}, lease); err != nil {
		if apierrors.IsNotFound(err) {
			if err := c.Get(ctx, client.ObjectKey{Name: unit}, &sitev1.NodeUnit{}); apierrors.IsNotFound(err) {
				return fmt.Errorf("no such unit: NodeUnit %s does not exist (sitegridctl site list shows the units)", unit)
			}
			return fmt.Errorf("unit %s has no health report (Lease %s/%s): its hubs run no distributed health, or none has reached the cloud yet", unit, health.Namespace, unit)
		}
		return err
	}
	r, err := health.ParseReport(lease.Annotations)
	if err != nil {
		return fmt.Errorf("the health report of unit %s (Lease %s/%s): %w", unit, health.Namespace, unit, err)
	}
	now := time.Now()
	state := "fresh"
	if healthcontroller.Stale(lease, now) {
		state = "stale: no member reaches the cloud, the control plane keeps the unit's nodes"
	}
	fmt.Fprintf(out, "unit %s: reported by %s %s ago (%s)\n\n", unit, r.Reporter, now.Sub(r.Time).Round(time.Second), state)
	guard := &healthcontroller.Guard{Client: c, Clock: clock.RealClock{}, MaxAutonomy: maxAutonomy}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tCLOUD\tVERDICT\tUNREACHABLE-FROM\tCONTROL-PLANE")
	for _, m := range r.Members {
		cloud := "NotReady"
		n := &corev1.Node{}
		if err := c.Get(ctx, client.ObjectKey{Name: m}, n); err != nil {
			cloud = "missing"
		} else {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					cloud = "Ready"
				}
			}
		}
		var from []string
		for _, v := range r.Votes {
			if slices.Contains(v.Failed, m) {
				from = append(from, v.Voter)
			}
		}
		action := "-"
		if cloud != "Ready" {
			d, err := guard.DecideWithReport(ctx, m, lease, r)
			switch {
			case err != nil:
				action = err.Error()
			case d.Keep:
				action = "keeps its pods: " + d.Reason
			default:
				action = "normal handling: " + d.Reason
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m, cloud, orDash(string(r.Verdicts[m])), orDash(strings.Join(from, ",")), action)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nviews (what each member heard by the reporter cannot reach):")
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tCANNOT-REACH")
	heard := map[string]bool{}
	for _, v := range r.Votes {
		heard[v.Voter] = true
		fmt.Fprintf(tw, "%s\t%s\n", v.Voter, orDash(strings.Join(v.Failed, ",")))
	}
	for _, m := range r.Members {
		if !heard[m] {
			fmt.Fprintf(tw, "%s\t(not heard)\n", m)
		}
	}
	return tw.Flush()
}

func printSites(out io.Writer, units []sitev1.NodeUnit, groups []sitev1.NodeGroup) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UNIT\tTYPE\tREADY\tGROUPS\tNOT READY")
	for i := range units {
		u := &units[i]
		var in []string
		for j := range groups {
			if sitev1.GroupHasUnit(&groups[j], u) {
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
		ready[units[i].Name] = meta.IsStatusConditionTrue(units[i].Status.Conditions, sitev1.UnitReady)
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
		if c := meta.FindStatusCondition(g.Status.Conditions, sitev1.GroupConflict); c != nil && c.Status == "True" {
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
