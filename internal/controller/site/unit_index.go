package site

import (
	"context"
	"maps"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// UnitCandidateIndex indexes cached NodeUnits by what any member node must
// have, so the units of one node are found without scanning every unit:
//   - "node:<name>" for each node the unit names;
//   - "label:<key>=<value>" for the first (sorted) of its selector's
//     matchLabels, which every member carries;
//   - "*" for a selector of expressions or annotations only, which no
//     single label narrows (few units, looked at for every node).
const UnitCandidateIndex = "site.sitegrid.io/candidate"

const anyNode = "*"

// IndexUnitCandidates registers UnitCandidateIndex with the manager's cache.
func IndexUnitCandidates(ctx context.Context, mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &sitev1.NodeUnit{}, UnitCandidateIndex, func(o client.Object) []string {
		u, ok := o.(*sitev1.NodeUnit)
		if !ok {
			return nil
		}
		return unitCandidateKeys(u)
	})
}

func unitCandidateKeys(u *sitev1.NodeUnit) []string {
	keys := make([]string, 0, len(u.Spec.Nodes)+1)
	for _, n := range u.Spec.Nodes {
		keys = append(keys, "node:"+n)
	}
	sel := u.Spec.Selector
	switch {
	case sel == nil:
	case len(sel.MatchLabels) > 0:
		k := slices.Min(slices.Collect(maps.Keys(sel.MatchLabels)))
		keys = append(keys, "label:"+k+"="+sel.MatchLabels[k])
	case len(sel.MatchExpressions) > 0 || len(sel.Annotations) > 0:
		keys = append(keys, anyNode)
	}
	return keys
}

// unitsOfNode lists, sorted by name, the cached units that have node as a
// member (deleted ones included), looking only at the units the index
// names for it. The units are the cache's own objects: never change them.
func unitsOfNode(ctx context.Context, c client.Reader, node *corev1.Node) ([]*sitev1.NodeUnit, error) {
	keys := make([]string, 0, len(node.Labels)+2)
	keys = append(keys, "node:"+node.Name, anyNode)
	for k, v := range node.Labels {
		keys = append(keys, "label:"+k+"="+v)
	}
	seen := map[string]bool{}
	var out []*sitev1.NodeUnit
	for _, key := range keys {
		var units sitev1.NodeUnitList
		if err := c.List(ctx, &units, client.MatchingFields{UnitCandidateIndex: key}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		for i := range units.Items {
			u := &units.Items[i]
			if !seen[u.Name] && sitev1.UnitHasNode(u, node) {
				seen[u.Name] = true
				out = append(out, u)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// unitsJoinedOrLeft is the units in exactly one of before and after (by
// name): what a node's change made it join or leave.
func unitsJoinedOrLeft(before, after []*sitev1.NodeUnit) []*sitev1.NodeUnit {
	has := func(list []*sitev1.NodeUnit, u *sitev1.NodeUnit) bool {
		return slices.ContainsFunc(list, func(o *sitev1.NodeUnit) bool { return o.Name == u.Name })
	}
	var out []*sitev1.NodeUnit
	for _, u := range before {
		if !has(after, u) {
			out = append(out, u)
		}
	}
	for _, u := range after {
		if !has(before, u) {
			out = append(out, u)
		}
	}
	return out
}

// nodeUnits is unitsOfNode for event handlers: a node that may be absent
// (nil: none), an error logged (none).
func nodeUnits(ctx context.Context, c client.Reader, n *corev1.Node) []*sitev1.NodeUnit {
	if n == nil {
		return nil
	}
	units, err := unitsOfNode(ctx, c, n)
	if err != nil {
		log.FromContext(ctx).Error(err, "list the units of a node", "node", n.Name)
	}
	return units
}
