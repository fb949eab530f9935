package site

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/validation"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// InvalidSetNode lists what in s a Node cannot carry, as the apiserver
// validates Node labels, annotations and taints. The CRD's own validation
// refuses most of it; this catches the rest (the total size of
// annotations) and units stored before the CRD checked values.
func InvalidSetNode(s sitev1.SetNode) []string {
	var problems []string
	for _, k := range slices.Sorted(maps.Keys(s.Labels)) {
		for _, msg := range validation.IsQualifiedName(k) {
			problems = append(problems, fmt.Sprintf("label key %q: %s", k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(s.Labels[k]) {
			problems = append(problems, fmt.Sprintf("label %s value %q: %s", k, s.Labels[k], msg))
		}
	}
	for _, err := range apivalidation.ValidateAnnotations(s.Annotations, nil) {
		problems = append(problems, "annotations: "+err.Detail)
	}
	for _, t := range s.Taints {
		for _, msg := range validation.IsQualifiedName(t.Key) {
			problems = append(problems, fmt.Sprintf("taint key %q: %s", t.Key, msg))
		}
		if t.Value != "" {
			for _, msg := range validation.IsValidLabelValue(t.Value) {
				problems = append(problems, fmt.Sprintf("taint %s value %q: %s", t.Key, t.Value, msg))
			}
		}
		switch t.Effect {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			problems = append(problems, fmt.Sprintf("taint %s effect %q: must be NoSchedule, PreferNoSchedule or NoExecute", t.Key, t.Effect))
		}
	}
	return problems
}

// setNodeMessage is the condition and Event message for problems.
func setNodeMessage(problems []string) string {
	const most = 5
	msg := strings.Join(problems[:min(len(problems), most)], "; ")
	if len(problems) > most {
		msg += fmt.Sprintf("; and %d more", len(problems)-most)
	}
	return "setNode is put on no node: " + msg
}
