// Package site holds the controllers of NodeUnit and NodeGroup: who is a
// member of what, and what sitegrid puts on each member node.
//
// Bookkeeping keys (all prefixed; the only bare key is the group label):
//   - node label <group>=<unit>: the contract ServiceGroup relies on; every
//     member node of unit U in group G carries it.
//   - NodeUnit label site.sitegrid.io/auto-group=<group>: the unit was created
//     by that group's autoFindNodeKeys (the group also owns it, so deleting
//     the group deletes it).
//   - field manager "sitegrid-site": the labels, annotations, taints and
//     cordon sitegrid put on a node, tracked by server-side apply.
package site

import (
	"encoding/json"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// FieldManager owns every field sitegrid sets on nodes.
const FieldManager = "sitegrid-site"

// Snapshot is the set of units and groups the decisions are made from. For
// a node's decisions, Units needs only the units that have the node and the
// automatic units its groups would name for it; more does no harm.
type Snapshot struct {
	Units  []*sitev1.NodeUnit
	Groups []*sitev1.NodeGroup
}

// UnitsOfNode returns the live units that have node as a member, by name.
func (s Snapshot) UnitsOfNode(node *corev1.Node) []*sitev1.NodeUnit {
	var out []*sitev1.NodeUnit
	for _, u := range s.Units {
		if u.DeletionTimestamp == nil && sitev1.UnitHasNode(u, node) {
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// GroupClaims returns the units of group that claim node, sorted. A unit
// that autoFindNodeKeys would make for the node counts even before it exists,
// so a new node gets its group label in one write.
func (s Snapshot) GroupClaims(group *sitev1.NodeGroup, nodeUnits []*sitev1.NodeUnit, node *corev1.Node) []string {
	var claims []string
	for _, u := range nodeUnits {
		if sitev1.GroupHasUnit(group, u) {
			claims = append(claims, u.Name)
		}
	}
	if values, ok := sitev1.AutoValues(group, node); ok {
		if name := sitev1.AutoUnitName(group.Name, values); !slices.Contains(claims, name) {
			claims = append(claims, name)
		}
	}
	sort.Strings(claims)
	return claims
}

// PickUnit chooses the group label value among claims. A node keeps its
// current value while that unit still claims it, so a second claimant never
// makes the label flap; otherwise the first name wins.
func PickUnit(claims []string, current string, hasCurrent bool) string {
	if hasCurrent && slices.Contains(claims, current) {
		return current
	}
	return claims[0]
}

// Desired is what sitegrid wants on one node.
type Desired struct {
	Labels        map[string]string
	Annotations   map[string]string
	Taints        []corev1.Taint
	Unschedulable bool
}

// Conflict is a node claimed by more than one unit of a group.
type Conflict struct {
	Group, Node string
	Units       []string
	Kept        string
}

// DesiredForNode computes the group labels, SuperEdge's annotation listing
// the node's units, and the union of the setNode of every unit the node
// belongs to. Where units disagree on a label,
// annotation or taint value, the unit first by name wins.
func (s Snapshot) DesiredForNode(node *corev1.Node) (Desired, []Conflict) {
	d := Desired{Labels: map[string]string{}, Annotations: map[string]string{}}
	units := s.UnitsOfNode(node)
	var conflicts []Conflict
	for _, g := range s.Groups {
		if g.DeletionTimestamp != nil {
			continue
		}
		claims := s.GroupClaims(g, units, node)
		if len(claims) == 0 {
			continue
		}
		current, has := node.Labels[g.Name]
		pick := PickUnit(claims, current, has)
		d.Labels[g.Name] = pick
		if len(claims) > 1 {
			conflicts = append(conflicts, Conflict{Group: g.Name, Node: node.Name, Units: claims, Kept: pick})
		}
	}
	if names := s.unitNames(units, node); len(names) > 0 {
		list, _ := json.Marshal(names) // strings always marshal
		d.Annotations[sitev1.AnnotationNodeUnits] = string(list)
	}
	taintSeen := map[string]bool{}
	for _, u := range units {
		if u.Spec.Unschedulable {
			d.Unschedulable = true
		}
		// What the apiserver would refuse would fail the node's whole
		// apply, every other unit's fields included: the unit's status
		// says why it is left out (UnitSetNodeValid).
		if len(InvalidSetNode(u.Spec.SetNode)) > 0 {
			continue
		}
		for k, v := range u.Spec.SetNode.Labels {
			if _, ok := d.Labels[k]; !ok {
				d.Labels[k] = v
			}
		}
		for k, v := range u.Spec.SetNode.Annotations {
			if _, ok := d.Annotations[k]; !ok {
				d.Annotations[k] = v
			}
		}
		for _, t := range u.Spec.SetNode.Taints {
			key := t.Key + "\x00" + string(t.Effect)
			if !taintSeen[key] {
				taintSeen[key] = true
				d.Taints = append(d.Taints, corev1.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect})
			}
		}
	}
	sort.Slice(d.Taints, func(i, j int) bool {
		if d.Taints[i].Key != d.Taints[j].Key {
			return d.Taints[i].Key < d.Taints[j].Key
		}
		return d.Taints[i].Effect < d.Taints[j].Effect
	})
	return d, conflicts
}

// unitNames lists, sorted, the units the node belongs to: units, and the
// automatic units its groups' autoFindNodeKeys make for it even before they
// exist, so a new node gets the list in the same write as its group label.
func (s Snapshot) unitNames(units []*sitev1.NodeUnit, node *corev1.Node) []string {
	names := make([]string, 0, len(units))
	for _, u := range units {
		names = append(names, u.Name)
	}
	for _, g := range s.Groups {
		values, ok := sitev1.AutoValues(g, node)
		if !ok || g.DeletionTimestamp != nil {
			continue
		}
		name := sitev1.AutoUnitName(g.Name, values)
		if slices.Contains(names, name) || slices.ContainsFunc(s.Units, func(u *sitev1.NodeUnit) bool { return u.Name == name }) {
			continue // listed already, or a unit of that name exists and does not have the node
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
