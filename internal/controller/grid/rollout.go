package grid

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

const defaultProgressDeadline = 600 * time.Second

// rolloutUnit is what the rollout knows of one unit that has a child.
type rolloutUnit struct {
	value string
	// outdated: the child's template hash is not the desired one.
	outdated bool
	// available: the child runs its spec, every replica updated and ready.
	available bool
	// updatedAt is when the child's template was last changed.
	updatedAt time.Time
}

// rolloutDecision is what a pass of the rollout does: the units to update
// now, in order, the RolloutProgressing condition, and when to look again.
type rolloutDecision struct {
	update    []string
	halted    []string
	condition metav1.Condition
	requeue   requeue
}

// planRollout decides which outdated units to update: all at once without a
// strategy, else at most maxUnavailableUnits units in progress at a time,
// the next only when the updated ones are Available, halting when one
// misses its deadline. units are the units with a child, in order; total
// counts every unit, for percentages.
func planRollout(units []rolloutUnit, total int, strategy *gridv1.RolloutStrategy, clk clock.PassiveClock) rolloutDecision {
	deadline := defaultProgressDeadline
	if strategy != nil && strategy.ProgressDeadlineSeconds != nil {
		deadline = time.Duration(*strategy.ProgressDeadlineSeconds) * time.Second
	}
	var d rolloutDecision
	var outdated, inProgress []string
	for _, u := range units {
		switch {
		case u.outdated:
			outdated = append(outdated, u.value)
		case u.available:
		case deadline-clk.Since(u.updatedAt) > 0:
			inProgress = append(inProgress, u.value)
			d.requeue.in(deadline - clk.Since(u.updatedAt) + time.Second)
		default:
			d.halted = append(d.halted, u.value)
		}
	}
	d.condition = metav1.Condition{Type: gridv1.ConditionRolloutProgressing, Status: metav1.ConditionFalse}
	c := &d.condition
	switch {
	case len(outdated) == 0 && len(inProgress) == 0 && len(d.halted) == 0:
		c.Reason, c.Message = gridv1.ReasonRolloutComplete, "every unit runs the current template"
		return d
	case strategy != nil && len(d.halted) > 0:
		c.Reason = gridv1.ReasonRolloutHalted
		c.Message = fmt.Sprintf("rollout halted: units %s did not become Available within %s; %d units wait", strings.Join(d.halted, ", "), deadline, len(outdated))
		return d
	case strategy != nil && strategy.Paused:
		c.Reason = gridv1.ReasonRolloutPaused
		c.Message = fmt.Sprintf("rollout paused with %d units waiting and %d updating", len(outdated), len(inProgress))
		return d
	}
	budget := len(outdated)
	if strategy != nil {
		budget = maxUnavailable(strategy.MaxUnavailableUnits, total) - len(inProgress) - len(d.halted)
	}
	d.update = outdated[:max(0, min(budget, len(outdated)))]
	if len(d.update) > 0 {
		d.requeue.in(deadline + time.Second)
	}
	c.Status, c.Reason = metav1.ConditionTrue, gridv1.ReasonRollingOut
	c.Message = fmt.Sprintf("%d units updating, %d waiting", len(inProgress)+len(d.update), len(outdated)-len(d.update))
	return d
}

func maxUnavailable(v *intstr.IntOrString, units int) int {
	if v == nil {
		return 1
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, units, false)
	if err != nil || n < 1 {
		return 1
	}
	return n
}
