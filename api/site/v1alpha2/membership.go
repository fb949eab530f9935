package v1alpha2

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// AutoGroupLabel marks a NodeUnit created by a group's autoFindNodeKeys; its
// value is the group.
const AutoGroupLabel = "site.sitegrid.io/auto-group"

// AnnotationNodeUnits is SuperEdge's node annotation listing, as a JSON
// array of names, the units the node belongs to; SuperEdge's tools read it,
// and sitegrid keeps it current.
const AnnotationNodeUnits = "nodeunits.superedge.io"

// selectorMatches reports whether sel selects an object with these labels
// and annotations. An empty selector selects nothing: a unit or group must
// say what it wants, so a typo never claims the whole cluster.
func selectorMatches(sel *Selector, objLabels, objAnnotations map[string]string) (bool, error) {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0 && len(sel.Annotations) == 0) {
		return false, nil
	}
	// Fast path for the common selector, matchLabels only: map lookups, no
	// parsing. (A bad value can never match a node's valid label.)
	for k, v := range sel.MatchLabels {
		if got, ok := objLabels[k]; !ok || got != v {
			return false, nil
		}
	}
	if len(sel.MatchExpressions) > 0 {
		s, err := sel.LabelSelector()
		if err != nil {
			return false, err
		}
		if !s.Matches(labels.Set(objLabels)) {
			return false, nil
		}
	}
	for k, v := range sel.Annotations {
		if got, ok := objAnnotations[k]; !ok || got != v {
			return false, nil
		}
	}
	return true, nil
}

// LabelSelector converts the label part of sel; it fails on bad values.
func (sel *Selector) LabelSelector() (labels.Selector, error) {
	s, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: sel.MatchLabels, MatchExpressions: sel.MatchExpressions})
	if err != nil {
		return nil, fmt.Errorf("invalid selector: %w", err)
	}
	return s, nil
}

// UnitHasNode reports whether node is a member of unit.
func UnitHasNode(unit *NodeUnit, node *corev1.Node) bool {
	if slices.Contains(unit.Spec.Nodes, node.Name) {
		return true
	}
	ok, err := selectorMatches(unit.Spec.Selector, node.Labels, node.Annotations)
	return err == nil && ok
}

// GroupHasUnit reports whether unit is a member of group.
func GroupHasUnit(group *NodeGroup, unit *NodeUnit) bool {
	if slices.Contains(group.Spec.NodeUnits, unit.Name) || unit.Labels[AutoGroupLabel] == group.Name {
		return true
	}
	ok, err := selectorMatches(group.Spec.Selector, unit.Labels, unit.Annotations)
	return err == nil && ok
}

// AutoValues returns the node's values for the group's autoFindNodeKeys, in
// key order, and whether it carries all of them.
func AutoValues(group *NodeGroup, node *corev1.Node) ([]string, bool) {
	if len(group.Spec.AutoFindNodeKeys) == 0 {
		return nil, false
	}
	values := make([]string, 0, len(group.Spec.AutoFindNodeKeys))
	for _, k := range group.Spec.AutoFindNodeKeys {
		v, ok := node.Labels[k]
		if !ok {
			return nil, false
		}
		values = append(values, v)
	}
	return values, true
}

var notNameChars = regexp.MustCompile(`[^a-z0-9-]+`)

// AutoUnitName names the unit autoFindNodeKeys creates for one combination of
// values: "<group>-<value>[-<value>...]". When that is not a valid name of at
// most 63 characters (the name is also a label value), or when several values
// one of which holds a '-' make the split ambiguous, the name is lowercased,
// cleaned, cut and given a hash of the exact values, so distinct combinations
// of one group never share a name.
func AutoUnitName(group string, values []string) string {
	raw := group + "-" + strings.Join(values, "-")
	name := strings.Trim(notNameChars.ReplaceAllString(strings.ToLower(raw), "-"), "-")
	ambiguous := len(values) > 1 && slices.ContainsFunc(values, func(v string) bool { return strings.Contains(v, "-") })
	if name == raw && len(name) <= 63 && !ambiguous {
		return name
	}
	sum := sha256.Sum256([]byte(group + "\x00" + strings.Join(values, "\x00")))
	suffix := hex.EncodeToString(sum[:])[:8]
	if len(name) > 54 {
		name = strings.TrimRight(name[:54], "-")
	}
	return name + "-" + suffix
}
