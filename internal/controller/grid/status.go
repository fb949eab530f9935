package grid

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// setStatus fills in the status of s.updated from what the phases got to;
// a condition whose phase did not run keeps its last value. Every unit
// failure that is new since the last status is also an Event.
func (r *workloadGridReconciler[G, C, S]) setStatus(s *gridScope[G, C, S]) {
	st := r.k.status(s.updated)
	old := *r.k.status(s.grid).conditions
	gen := s.grid.GetGeneration()
	if s.values != nil {
		r.setUnits(s, st, gen)
	}
	var reported []unitFailure
	if s.planned {
		invalid := s.failuresOf(gridv1.ReasonInvalidTemplate, gridv1.ReasonInvalidOverride, gridv1.ReasonPinningOverride, gridv1.ReasonChildRefused)
		meta.SetStatusCondition(st.conditions, failureCondition(gridv1.ConditionValid, metav1.ConditionFalse, invalid,
			gridv1.ReasonValid, "every unit's copy can be made", gen))
		reported = append(reported, invalid...)
	}
	if s.created {
		conflicts := s.failuresOf(gridv1.ReasonNameTaken, gridv1.ReasonNameClash)
		meta.SetStatusCondition(st.conditions, failureCondition(gridv1.ConditionConflict, metav1.ConditionTrue, conflicts,
			gridv1.ReasonNoConflict, "every child name is free or the grid's own", gen))
		reported = append(reported, conflicts...)
	}
	if s.rollout != nil {
		cond := s.rollout.condition
		cond.ObservedGeneration = gen
		if prev := meta.FindStatusCondition(old, cond.Type); cond.Reason == gridv1.ReasonRolloutHalted && (prev == nil || prev.Reason != cond.Reason) {
			r.recorder.Eventf(s.grid, nil, corev1.EventTypeWarning, gridv1.ReasonRolloutHalted, "Rollout", "%s", cond.Message)
		}
		meta.SetStatusCondition(st.conditions, cond)
	}
	synced := metav1.Condition{Type: gridv1.ConditionSynced, Status: metav1.ConditionTrue, Reason: gridv1.ReasonReconcileSuccess,
		Message: "the last pass did every step", ObservedGeneration: gen}
	if s.failedPhase != "" {
		synced.Status, synced.Reason = metav1.ConditionFalse, gridv1.ReasonReconcileError
		synced.Message = fmt.Sprintf("%s: %v", s.failedPhase, s.failedErr)
	} else {
		*st.observedGeneration = gen
	}
	meta.SetStatusCondition(st.conditions, synced)
	reportNew(r.recorder, s.grid, old, reported, func(f unitFailure) runtime.Object {
		if f.child == "" {
			return nil
		}
		c := r.k.newChild()
		c.SetNamespace(s.grid.GetNamespace())
		c.SetName(f.child)
		return c
	})
}

// setUnits sets the per-unit states, the counts and Available. A unit
// with no copy (its copy cannot be made, or is not made yet) is not
// Available.
func (r *workloadGridReconciler[G, C, S]) setUnits(s *gridScope[G, C, S], st gridStatus, gen int64) {
	live := map[string]C{}
	for _, v := range s.values {
		if c, ok := s.children[v]; ok {
			live[v] = c
		}
	}
	current := map[string]string{}
	for _, p := range s.plans {
		current[p.value] = p.hash
		if p.has {
			live[p.value] = p.child
		}
	}
	r.k.setStates(s.updated, live)
	var ready, updatedUnits int32
	var unavailable []string
	for _, v := range s.values {
		c, ok := live[v]
		switch {
		case !ok:
			unavailable = append(unavailable, v+" (no copy)")
			continue
		case r.k.available(c):
			ready++
		default:
			unavailable = append(unavailable, v)
		}
		if c.GetAnnotations()[gridv1.AnnotationTemplateHash] == current[v] {
			updatedUnits++
		}
	}
	*st.counts = gridv1.GridUnitCounts{Units: int32(len(live)), ReadyUnits: ready, UpdatedUnits: updatedUnits}
	cond := metav1.Condition{Type: gridv1.ConditionAvailable, ObservedGeneration: gen}
	switch {
	case len(s.values) == 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, gridv1.ReasonNoUnits, "no node carries the gridUniqKey label"
	case len(unavailable) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, gridv1.ReasonUnitsUnavailable
		cond.Message = fmt.Sprintf("%d of %d units not Available: %s", len(unavailable), len(s.values), strings.Join(unavailable[:min(len(unavailable), 10)], ", "))
	default:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, gridv1.ReasonAllUnitsAvailable, fmt.Sprintf("all %d units Available", len(s.values))
	}
	meta.SetStatusCondition(st.conditions, cond)
}

// failureCondition is condType with status bad and the first failure's
// reason when there are failures, naming up to five of them.
func failureCondition(condType string, bad metav1.ConditionStatus, failures []unitFailure, okReason, okMessage string, gen int64) metav1.Condition {
	cond := metav1.Condition{Type: condType, Status: metav1.ConditionTrue, Reason: okReason, Message: okMessage, ObservedGeneration: gen}
	if bad == metav1.ConditionTrue {
		cond.Status = metav1.ConditionFalse
	}
	if len(failures) == 0 {
		return cond
	}
	msgs := make([]string, 0, 5)
	for _, f := range failures[:min(len(failures), 5)] {
		msgs = append(msgs, f.message)
	}
	cond.Status, cond.Reason, cond.Message = bad, failures[0].reason, strings.Join(msgs, "; ")
	if len(failures) > 5 {
		cond.Message += fmt.Sprintf("; and %d more", len(failures)-5)
	}
	return cond
}

// reportNew emits a Warning Event for each failure the old conditions did
// not show yet, so a failure is an Event once, not on every pass. related
// gives the object an Event refers to besides the grid (nil for none).
func reportNew(recorder events.EventRecorder, grid client.Object, old []metav1.Condition, failures []unitFailure, related func(unitFailure) runtime.Object) {
	sort.SliceStable(failures, func(i, j int) bool { return failures[i].value < failures[j].value })
	for _, f := range failures {
		if prev := meta.FindStatusCondition(old, conditionOf(f.reason)); prev != nil && strings.Contains(prev.Message, f.message) {
			continue
		}
		recorder.Eventf(grid, related(f), corev1.EventTypeWarning, f.reason, actionOf(f.reason), "%s", f.message)
	}
}

// actionOf is the Event action of a failure reason.
func actionOf(reason string) string {
	switch reason {
	case gridv1.ReasonChildRefused:
		return "Write"
	case gridv1.ReasonNameTaken:
		return "Create"
	default:
		return "Plan"
	}
}
