package grid

import (
	"time"

	"k8s.io/utils/clock"
)

// unitChild is what the vanished-unit logic knows of one child.
type unitChild struct {
	value string
	// goneSince is the child's AnnotationUnitGoneSince; marked tells an
	// empty one from none.
	goneSince string
	marked    bool
}

// vanishedDecision: children whose unit is back lose their mark, children
// of a unit no node carries get one, and those marked for longer than the
// grace period go.
type vanishedDecision struct {
	unmark, mark, remove []string
	requeue              requeue
}

// planVanished decides, for the children of a grid, which units have
// vanished and which of their children have outlived the grace period; a
// label that flaps back in time keeps its child. A mark that is not a time
// is set again.
func planVanished(children []unitChild, values []string, grace time.Duration, clk clock.PassiveClock) vanishedDecision {
	var d vanishedDecision
	present := make(map[string]bool, len(values))
	for _, v := range values {
		present[v] = true
	}
	for _, c := range children {
		if present[c.value] {
			if c.marked {
				d.unmark = append(d.unmark, c.value)
			}
			continue
		}
		since, err := time.Parse(time.RFC3339, c.goneSince)
		if !c.marked || err != nil {
			d.mark = append(d.mark, c.value)
			d.requeue.in(grace + time.Second)
			continue
		}
		if left := grace - clk.Since(since); left > 0 {
			d.requeue.in(left + time.Second)
			continue
		}
		d.remove = append(d.remove, c.value)
	}
	return d
}
