package grid

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// What pins a copy to its unit is the node selector on the unit key, which
// pinToUnit sets last. An override may not touch it, nor what would make it
// moot: nodeName (which bypasses the scheduler) and node affinity terms on
// the unit key. Such an override is reported, never applied.

// templatePinning reports a template that runs its pods outside any unit.
func templatePinning(pod *corev1.PodSpec) error {
	if pod.NodeName != "" {
		return fmt.Errorf("the template sets nodeName %q: every copy would run on that one node, whatever its unit", pod.NodeName)
	}
	return nil
}

// overridePinning reports what the overrides changed, between the template
// (before) and the overridden spec (after), of what pins a copy to the unit
// of key.
func overridePinning(before, after *corev1.PodSpec, key string) error {
	var changed []string
	if after.NodeName != before.NodeName {
		changed = append(changed, "nodeName")
	}
	was, had := before.NodeSelector[key]
	is, has := after.NodeSelector[key]
	if was != is || had != has {
		changed = append(changed, "nodeSelector "+key)
	}
	if !equality.Semantic.DeepEqual(affinityOn(before, key), affinityOn(after, key)) {
		changed = append(changed, "node affinity on "+key)
	}
	if len(changed) > 0 {
		return fmt.Errorf("the overrides change %s, which pin the copy to its unit; not applied", strings.Join(changed, " and "))
	}
	return nil
}

// affinityOn collects the node affinity requirements on key.
func affinityOn(pod *corev1.PodSpec, key string) []corev1.NodeSelectorRequirement {
	if pod.Affinity == nil || pod.Affinity.NodeAffinity == nil {
		return nil
	}
	na := pod.Affinity.NodeAffinity
	var terms []corev1.NodeSelectorTerm
	if na.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		terms = append(terms, na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms...)
	}
	for _, p := range na.PreferredDuringSchedulingIgnoredDuringExecution {
		terms = append(terms, p.Preference)
	}
	var out []corev1.NodeSelectorRequirement
	for _, t := range terms {
		for _, r := range t.MatchExpressions {
			if r.Key == key {
				out = append(out, r)
			}
		}
	}
	return out
}

// pinToUnit makes the copy of one unit: pods only on the unit's nodes, and
// selector and pod labels that name grid and unit, so the copies of
// different units never select each other's pods.
func pinToUnit(ws workloadSpec, gridName, key, value string) {
	pinByNodeSelector(ws, key, value)
	pod := ws.podTemplate()
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[gridv1.LabelGridSelector] = gridName
	pod.Labels[gridv1.LabelGridUnit] = value
	sel := *ws.selector()
	if sel == nil {
		sel = &metav1.LabelSelector{}
	} else {
		sel = sel.DeepCopy()
	}
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[gridv1.LabelGridSelector] = gridName
	sel.MatchLabels[gridv1.LabelGridUnit] = value
	*ws.selector() = sel
}
