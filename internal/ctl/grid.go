package ctl

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

func newGridCommand() *cobra.Command {
	var kubeconfig, namespace string
	cmd := &cobra.Command{Use: "grid", Short: "Service groups: DeploymentGrids and StatefulSetGrids"}
	cmd.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", "", "Path of the kubeconfig (default: $KUBECONFIG or ~/.kube/config).")
	cmd.PersistentFlags().StringVarP(&namespace, "namespace", "n", "default", "Namespace of the grid.")
	cmd.AddCommand(&cobra.Command{
		Use:   "status NAME",
		Short: "Show each unit's copy and rollout state of a DeploymentGrid (or StatefulSetGrid)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := kubeClient(kubeconfig)
			if err != nil {
				return err
			}
			return gridStatus(cmd, c, types.NamespacedName{Namespace: namespace, Name: args[0]})
		},
	})
	return cmd
}

// unitRow is one line of `grid status`.
type unitRow struct {
	unit, child, template, replicas string
	updated, available              bool
}

func gridStatus(cmd *cobra.Command, c client.Client, key types.NamespacedName) error {
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	dg := &gridv1.DeploymentGrid{}
	err := c.Get(ctx, key, dg)
	if err == nil {
		var children appsv1.DeploymentList
		if err := c.List(ctx, &children, client.InNamespace(key.Namespace), client.MatchingLabels{gridv1.LabelGridSelector: key.Name}); err != nil {
			return err
		}
		var rows []unitRow
		for _, d := range children.Items {
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			rows = append(rows, unitRow{
				unit: d.Labels[gridv1.LabelGridUnit], child: d.Name, template: d.Annotations[gridv1.AnnotationTemplateHash],
				replicas:  fmt.Sprintf("%d/%d", d.Status.AvailableReplicas, want),
				updated:   d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want,
				available: d.Status.AvailableReplicas == want,
			})
		}
		return printGrid(out, "DeploymentGrid", key, dg.Status.Conditions, dg.Status.GridUnitCounts, rows)
	}
	sg := &gridv1.StatefulSetGrid{}
	if err2 := c.Get(ctx, key, sg); err2 != nil {
		return fmt.Errorf("no DeploymentGrid or StatefulSetGrid %s: %v", key, err)
	}
	var children appsv1.StatefulSetList
	if err := c.List(ctx, &children, client.InNamespace(key.Namespace), client.MatchingLabels{gridv1.LabelGridSelector: key.Name}); err != nil {
		return err
	}
	var rows []unitRow
	for _, s := range children.Items {
		want := int32(1)
		if s.Spec.Replicas != nil {
			want = *s.Spec.Replicas
		}
		rows = append(rows, unitRow{
			unit: s.Labels[gridv1.LabelGridUnit], child: s.Name, template: s.Annotations[gridv1.AnnotationTemplateHash],
			replicas: fmt.Sprintf("%d/%d", s.Status.ReadyReplicas, want),
			updated:  s.Status.UpdatedReplicas == want, available: s.Status.ReadyReplicas == want,
		})
	}
	return printGrid(out, "StatefulSetGrid", key, sg.Status.Conditions, sg.Status.GridUnitCounts, rows)
}

func printGrid(out io.Writer, kind string, key types.NamespacedName, conds []metav1.Condition, counts gridv1.GridUnitCounts, rows []unitRow) error {
	fmt.Fprintf(out, "%s %s: %d units, %d ready, %d on the current template\n", kind, key, counts.Units, counts.ReadyUnits, counts.UpdatedUnits)
	for _, t := range []string{gridv1.ConditionAvailable, gridv1.ConditionRolloutProgressing, gridv1.ConditionConflict, gridv1.ConditionValid} {
		if c := meta.FindStatusCondition(conds, t); c != nil {
			fmt.Fprintf(out, "  %-19s %-5s %s: %s\n", t, c.Status, c.Reason, c.Message)
		}
	}
	fmt.Fprintln(out)
	slices.SortFunc(rows, func(a, b unitRow) int { return strings.Compare(a.unit, b.unit) })
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UNIT\tCHILD\tTEMPLATE\tREADY\tUPDATED\tAVAILABLE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%t\n", r.unit, r.child, orDash(r.template), r.replicas, r.updated, r.available)
	}
	return tw.Flush()
}
