package health

import (
	"maps"
	"slices"
	"testing"
)

// side builds the votes of a group of members that reach each other and
// nobody else in members, as a partition of the unit leaves them.
func side(members []string, group ...string) map[string]Vote {
	votes := map[string]Vote{}
	for _, v := range group {
		var failed []string
		for _, m := range members {
			if !slices.Contains(group, m) {
				failed = append(failed, m)
			}
		}
		votes[v] = Vote{Voter: v, Seq: 1, Failed: failed}
	}
	return votes
}

func set(names ...string) map[string]bool {
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out
}

func TestTally(t *testing.T) {
	four := []string{"a", "b", "c", "d"}
	five := []string{"a", "b", "c", "d", "e"}
	all := func(members []string) map[string]Vote { return side(members, members...) }
	cases := []struct {
		name      string
		members   []string
		reachable map[string]bool
		votes     map[string]Vote
		want      map[string]Verdict
	}{
		{"everyone reaches everyone", four, set(four...), all(four),
			map[string]Verdict{"a": Alive, "b": Alive, "c": Alive, "d": Alive}},
		{"one node dead: the other three are a majority of four", four, set("a", "b", "c"), side(four, "a", "b", "c"),
			map[string]Verdict{"a": Alive, "b": Alive, "c": Alive, "d": Dead}},
		{"even split, seen from one side: no majority, the far side is unknown", four, set("a", "b"), side(four, "a", "b"),
			map[string]Verdict{"a": Alive, "b": Alive, "c": Unknown, "d": Unknown}},
		{"even split, seen from the other side", four, set("c", "d"), side(four, "c", "d"),
			map[string]Verdict{"a": Unknown, "b": Unknown, "c": Alive, "d": Alive}},
		{"3-2 split: the majority side judges the minority dead", five, set("a", "b", "c"), side(five, "a", "b", "c"),
			map[string]Verdict{"a": Alive, "b": Alive, "c": Alive, "d": Dead, "e": Dead}},
		{"3-2 split seen from the minority: nothing is dead", five, set("d", "e"), side(five, "d", "e"),
			map[string]Verdict{"a": Unknown, "b": Unknown, "c": Unknown, "d": Alive, "e": Alive}},
		{"a node cut off alone hears nobody", five, set("e"), side(five, "e"),
			map[string]Verdict{"a": Unknown, "b": Unknown, "c": Unknown, "d": Unknown, "e": Unknown}},
		{"two of four dead: the survivors are no majority", four, set("a", "b"), side(four, "a", "b"),
			map[string]Verdict{"a": Alive, "b": Alive, "c": Unknown, "d": Unknown}},
		{"unit of two: one cannot outvote the other", []string{"a", "b"}, set("a"), side([]string{"a", "b"}, "a"),
			map[string]Verdict{"a": Unknown, "b": Unknown}},
		{"unit of three, one dead", []string{"a", "b", "c"}, set("a", "b"), side([]string{"a", "b", "c"}, "a", "b"),
			map[string]Verdict{"a": Alive, "b": Alive, "c": Dead}},
		{"stale votes of unreachable voters do not count", four, set("a", "b"),
			map[string]Vote{"a": {Voter: "a", Failed: []string{"d"}}, "b": {Voter: "b", Failed: []string{"d"}}, "c": {Voter: "c", Failed: []string{"d"}}},
			map[string]Verdict{"a": Alive, "b": Alive, "c": Alive, "d": Unknown}},
		{"asymmetric: a majority fails to reach d though one member does", five, set(five...),
			map[string]Vote{"a": {Voter: "a", Failed: []string{"d"}}, "b": {Voter: "b", Failed: []string{"d"}}, "c": {Voter: "c", Failed: []string{"d"}}, "d": {Voter: "d"}, "e": {Voter: "e"}},
			map[string]Verdict{"a": Alive, "b": Alive, "c": Alive, "d": Dead, "e": Alive}},
		{"a member's own vote never counts for itself", []string{"a", "b", "c"}, set("a", "b", "c"),
			map[string]Vote{"a": {Voter: "a", Failed: []string{"b", "c"}}, "b": {Voter: "b", Failed: []string{"a"}}, "c": {Voter: "c", Failed: []string{"a"}}},
			map[string]Verdict{"a": Dead, "b": Alive, "c": Alive}},
		{"a member without a vote yet is not counted", []string{"a", "b", "c"}, set("a", "b", "c"),
			map[string]Vote{"a": {Voter: "a", Failed: []string{"c"}}},
			map[string]Verdict{"a": Unknown, "b": Alive, "c": Unknown}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Tally(c.members, c.reachable, c.votes); !maps.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestReportRoundTrip(t *testing.T) {
	r := &Report{Unit: "u", Reporter: "a", Members: []string{"a", "b"}, Votes: []Vote{{Voter: "a", Failed: []string{"b"}}},
		Verdicts: map[string]Verdict{"a": Unknown, "b": Unknown}}
	raw, err := r.Annotation()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseReport(map[string]string{ReportAnnotation: raw})
	if err != nil || !got.SameVerdicts(r) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := ParseReport(map[string]string{ReportAnnotation: "{"}); err == nil {
		t.Error("a broken report parsed")
	}
	if _, err := ParseReport(nil); err == nil {
		t.Error("a missing report parsed")
	}
}
