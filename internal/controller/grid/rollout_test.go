package grid

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

func TestPlanRollout(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(now)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	staged := &gridv1.RolloutStrategy{MaxUnavailableUnits: ptr.To(intstr.FromInt32(1)), ProgressDeadlineSeconds: ptr.To[int32](60)}
	current := func(v string) rolloutUnit { return rolloutUnit{value: v, available: true, updatedAt: ago(time.Hour)} }
	outdated := func(v string) rolloutUnit {
		return rolloutUnit{value: v, outdated: true, available: true, updatedAt: ago(time.Hour)}
	}
	updating := func(v string, since time.Duration) rolloutUnit { return rolloutUnit{value: v, updatedAt: ago(since)} }

	cases := []struct {
		name        string
		units       []rolloutUnit
		total       int
		strategy    *gridv1.RolloutStrategy
		wantUpdate  []string
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantMessage string
		wantRequeue time.Duration
	}{
		{name: "every unit current", units: []rolloutUnit{current("a"), current("b")}, total: 2, strategy: staged,
			wantStatus: metav1.ConditionFalse, wantReason: gridv1.ReasonRolloutComplete, wantMessage: "every unit runs the current template"},
		{name: "no strategy updates every outdated unit at once", units: []rolloutUnit{outdated("a"), outdated("b"), current("c")}, total: 3,
			wantUpdate: []string{"a", "b"}, wantStatus: metav1.ConditionTrue, wantReason: gridv1.ReasonRollingOut,
			wantMessage: "2 units updating, 0 waiting", wantRequeue: 601 * time.Second},
		{name: "one unit at a time, in order", units: []rolloutUnit{outdated("a"), outdated("b"), outdated("c")}, total: 3, strategy: staged,
			wantUpdate: []string{"a"}, wantStatus: metav1.ConditionTrue, wantReason: gridv1.ReasonRollingOut,
			wantMessage: "1 units updating, 2 waiting", wantRequeue: 61 * time.Second},
		{name: "the next waits while one is updating", units: []rolloutUnit{updating("a", 20*time.Second), outdated("b")}, total: 2, strategy: staged,
			wantStatus: metav1.ConditionTrue, wantReason: gridv1.ReasonRollingOut,
			wantMessage: "1 units updating, 1 waiting", wantRequeue: 41 * time.Second},
		{name: "a percentage of the units at once", units: []rolloutUnit{outdated("a"), outdated("b"), outdated("c"), outdated("d")}, total: 4,
			strategy:   &gridv1.RolloutStrategy{MaxUnavailableUnits: ptr.To(intstr.FromString("50%"))},
			wantUpdate: []string{"a", "b"}, wantStatus: metav1.ConditionTrue, wantReason: gridv1.ReasonRollingOut,
			wantMessage: "2 units updating, 2 waiting", wantRequeue: 601 * time.Second},
		{name: "a unit past its deadline halts the rollout", units: []rolloutUnit{current("a"), updating("b", 2*time.Minute), outdated("c")}, total: 3, strategy: staged,
			wantStatus: metav1.ConditionFalse, wantReason: gridv1.ReasonRolloutHalted,
			wantMessage: "rollout halted: units b did not become Available within 1m0s; 1 units wait"},
		{name: "without a strategy a late unit halts nothing", units: []rolloutUnit{updating("b", 20*time.Minute), outdated("c")}, total: 2,
			wantUpdate: []string{"c"}, wantStatus: metav1.ConditionTrue, wantReason: gridv1.ReasonRollingOut,
			wantMessage: "1 units updating, 0 waiting", wantRequeue: 601 * time.Second},
		{name: "paused starts nothing", units: []rolloutUnit{outdated("a"), updating("b", time.Second)}, total: 2,
			strategy:   &gridv1.RolloutStrategy{Paused: true, ProgressDeadlineSeconds: ptr.To[int32](60)},
			wantStatus: metav1.ConditionFalse, wantReason: gridv1.ReasonRolloutPaused,
			wantMessage: "rollout paused with 1 units waiting and 1 updating", wantRequeue: 60 * time.Second},
		{name: "units without a copy count for percentages", units: []rolloutUnit{outdated("a"), outdated("b")}, total: 10,
			strategy:   &gridv1.RolloutStrategy{MaxUnavailableUnits: ptr.To(intstr.FromString("20%"))},
			wantUpdate: []string{"a", "b"}, wantStatus: metav1.ConditionTrue, wantReason: gridv1.ReasonRollingOut,
			wantMessage: "2 units updating, 0 waiting", wantRequeue: 601 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := planRollout(tc.units, tc.total, tc.strategy, clk)
			if diff := cmp.Diff(tc.wantUpdate, d.update, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("units updated (-want +got):\n%s", diff)
			}
			c := d.condition
			if c.Type != gridv1.ConditionRolloutProgressing || c.Status != tc.wantStatus || c.Reason != tc.wantReason || !strings.Contains(c.Message, tc.wantMessage) {
				t.Errorf("condition %s=%s %s %q, want %s %s %q", c.Type, c.Status, c.Reason, c.Message, tc.wantStatus, tc.wantReason, tc.wantMessage)
			}
			if got := d.requeue.after(); got != tc.wantRequeue {
				t.Errorf("requeue after %s, want %s", got, tc.wantRequeue)
			}
		})
	}
}

func TestPlanVanished(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(now)
	stamp := func(ago time.Duration) string { return now.Add(-ago).Format(time.RFC3339) }
	grace := 5 * time.Minute
	cases := []struct {
		name        string
		children    []unitChild
		values      []string
		want        vanishedDecision
		wantRequeue time.Duration
	}{
		{name: "units all there", children: []unitChild{{value: "a"}, {value: "b"}}, values: []string{"a", "b"}},
		{name: "a unit goes: marked, looked at after the grace period", children: []unitChild{{value: "a"}, {value: "b"}}, values: []string{"a"},
			want: vanishedDecision{mark: []string{"b"}}, wantRequeue: grace + time.Second},
		{name: "a flap: the unit is back before the grace period ends", children: []unitChild{{value: "a", marked: true, goneSince: stamp(time.Minute)}},
			values: []string{"a"}, want: vanishedDecision{unmark: []string{"a"}}},
		{name: "marked, within the grace period", children: []unitChild{{value: "a", marked: true, goneSince: stamp(time.Minute)}},
			wantRequeue: 4*time.Minute + time.Second},
		{name: "marked, past the grace period: removed", children: []unitChild{{value: "a", marked: true, goneSince: stamp(6 * time.Minute)}, {value: "b"}},
			values: []string{"b"}, want: vanishedDecision{remove: []string{"a"}}},
		{name: "a mark that is not a time is set again", children: []unitChild{{value: "a", marked: true, goneSince: "yesterday"}},
			want: vanishedDecision{mark: []string{"a"}}, wantRequeue: grace + time.Second},
		{name: "the soonest requeue wins", children: []unitChild{{value: "a", marked: true, goneSince: stamp(4 * time.Minute)}, {value: "b"}},
			want: vanishedDecision{mark: []string{"b"}}, wantRequeue: time.Minute + time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := planVanished(tc.children, tc.values, grace, clk)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(vanishedDecision{}), cmp.FilterPath(func(p cmp.Path) bool {
				return p.Last().String() == ".requeue"
			}, cmp.Ignore())); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if got.requeue.after() != tc.wantRequeue {
				t.Errorf("requeue after %s, want %s", got.requeue.after(), tc.wantRequeue)
			}
		})
	}
}
