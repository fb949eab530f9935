package grid

import (
	"fmt"
	"sort"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// gridScope is what one reconcile of a grid knows, filled in phase by
// phase; the deferred status write reads whatever the phases got to.
type gridScope[G, C client.Object, S any] struct {
	// grid is the cached object, never changed; updated is its copy whose
	// status the pass fills in.
	grid    G
	updated G
	spec    gridSpec[S]

	// values are the unit values the nodes carry, sorted; nil until the
	// nodes were read.
	values []string
	// children are the grid's own children by unit value, vanished units'
	// included.
	children map[string]C
	// plans are the desired units, in value order.
	plans []*unitPlan[C, S]
	// failures are the units that have no current copy, and why.
	failures []unitFailure
	// planned and created: the plan and create phases ran to their end.
	planned, created bool
	// rollout is the condition the rollout phase decided.
	rollout *rolloutDecision

	requeue requeue
	// failed is the phase that failed and its error, for the Synced
	// condition.
	failedPhase string
	failedErr   error
}

func (s *gridScope[G, C, S]) fail(value, child, reason, format string, args ...any) {
	s.failures = append(s.failures, unitFailure{value: value, child: child, reason: reason, message: fmt.Sprintf(format, args...)})
}

// failuresOf returns the failures of the given reasons, in unit order.
func (s *gridScope[G, C, S]) failuresOf(reasons ...string) []unitFailure {
	var out []unitFailure
	for _, f := range s.failures {
		for _, r := range reasons {
			if f.reason == r {
				out = append(out, f)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].value < out[j].value })
	return out
}

// unitFailure is why one unit has no current copy.
type unitFailure struct {
	value string
	// child is the name of the unit's child (that would be), if it has one;
	// the unit's Events refer to it, so that those of different units are
	// not taken for one repeated Event.
	child string
	// reason is a condition reason: InvalidOverride, PinningOverride,
	// ChildRefused, NameClash or NameTaken.
	reason  string
	message string
}

// conditionOf is the grid condition a failure reason shows in.
func conditionOf(reason string) string {
	switch reason {
	case gridv1.ReasonNameTaken, gridv1.ReasonNameClash:
		return gridv1.ConditionConflict
	default:
		return gridv1.ConditionValid
	}
}

// requeue keeps the soonest of the times the phases of a reconcile want to
// come back; zero is "not at all".
type requeue time.Duration

// in asks to come back after d (ignored unless positive).
func (q *requeue) in(d time.Duration) {
	if d > 0 && (*q == 0 || d < time.Duration(*q)) {
		*q = requeue(d)
	}
}

func (q requeue) after() time.Duration { return time.Duration(q) }
