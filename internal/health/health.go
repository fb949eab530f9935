// Package health is distributed health's shared part: how the members of a
// NodeUnit vote on each other, and the report a unit publishes to the cloud
// (a Lease per unit in the Namespace below). The hubs vote and publish
// (internal/hub/health); sitegrid-manager reads the reports and acts on
// them (internal/controller/health).
package health

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

const (
	// Namespace holds one Lease per unit, named after the unit, whose
	// holder is the member that last published the unit's report, and the
	// gossip key Secret.
	Namespace = "sitegrid-health"
	// GossipKeySecret holds the unit gossip's encryption keys (data "keys":
	// base64 keys of 16, 24 or 32 bytes, one per line; the first encrypts,
	// all decrypt, so a key is rotated by adding the new one second, then
	// moving it first, then dropping the old one).
	GossipKeySecret = "sitegrid-health-gossip"
	// ReportAnnotation on a unit's Lease holds its Report as JSON.
	ReportAnnotation = "health.sitegrid.io/report"
	// GossipAddressAnnotation on a Node overrides where its hub gossips
	// (host:port); without it, the node's InternalIP and the configured port.
	GossipAddressAnnotation = "health.sitegrid.io/gossip-address"
	// AutonomyAnnotation "false" on a Node or a NodeUnit opts it out: the
	// control plane treats its nodes the normal Kubernetes way.
	AutonomyAnnotation = "health.sitegrid.io/autonomy"
	// MaxAutonomyAnnotation on a Node or a NodeUnit (a Go duration, "6h")
	// bounds how long a NotReady node is kept; the Node's value wins.
	MaxAutonomyAnnotation = "health.sitegrid.io/max-autonomy"
)

// Verdict is what a unit says about one of its nodes.
type Verdict string

const (
	// Alive: a member of the unit that reaches others still reaches it.
	Alive Verdict = "alive"
	// Dead: a majority of the whole unit cannot reach it.
	Dead Verdict = "dead"
	// Unknown: neither (no member reaches it, and too few say so to be a
	// majority: an even split, or a unit of two).
	Unknown Verdict = "unknown"
)

// Vote is one member's view of its unit: the members it cannot reach. A
// vote with a higher Seq from the same voter replaces the older one.
type Vote struct {
	Voter  string   `json:"voter"`
	Seq    int64    `json:"seq"`
	Failed []string `json:"failed,omitempty"`
}

// Tally judges every member of a unit. members are all nodes of the unit;
// only votes of reachable voters count (those the tallying member hears
// now, itself included). A node is Dead when more than half of the whole
// unit's members vote it unreachable: a side of a split that is not a
// majority never judges the other side dead, so two sides never condemn each
// other. It is Alive when a counted voter other than itself reaches it, and
// Unknown otherwise.
func Tally(members []string, reachable map[string]bool, votes map[string]Vote) map[string]Verdict {
	out := make(map[string]Verdict, len(members))
	for _, x := range members {
		out[x] = Judge(x, members, reachable, votes)
	}
	return out
}

// Judge is Tally for one member x.
func Judge(x string, members []string, reachable map[string]bool, votes map[string]Vote) Verdict {
	failed, seen := 0, 0
	for _, voter := range members {
		v, ok := votes[voter]
		if voter == x || !ok || !reachable[voter] {
			continue
		}
		if slices.Contains(v.Failed, x) {
			failed++
		} else {
			seen++
		}
	}
	switch {
	case 2*failed > len(members):
		return Dead
	case seen > 0:
		return Alive
	default:
		return Unknown
	}
}

// Report is a unit's published state: its members, each counted member's
// vote (its view) and the verdicts.
type Report struct {
	Unit     string             `json:"unit"`
	Reporter string             `json:"reporter"`
	Time     time.Time          `json:"time"`
	Members  []string           `json:"members"`
	Votes    []Vote             `json:"votes"`
	Verdicts map[string]Verdict `json:"verdicts"`
}

// ParseReport reads a Lease's report annotation.
func ParseReport(annotations map[string]string) (*Report, error) {
	raw, ok := annotations[ReportAnnotation]
	if !ok {
		return nil, fmt.Errorf("no %s annotation", ReportAnnotation)
	}
	r := &Report{}
	if err := json.Unmarshal([]byte(raw), r); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", ReportAnnotation, err)
	}
	return r, nil
}

// SameVerdicts reports whether two reports say the same (ignoring time and
// reporter): a member only writes when something changed or the report is
// due for renewal.
func (r *Report) SameVerdicts(o *Report) bool {
	if r == nil || o == nil {
		return r == o
	}
	if !slices.Equal(r.Members, o.Members) || len(r.Verdicts) != len(o.Verdicts) || len(r.Votes) != len(o.Votes) {
		return false
	}
	for k, v := range r.Verdicts {
		if o.Verdicts[k] != v {
			return false
		}
	}
	for i := range r.Votes {
		if r.Votes[i].Voter != o.Votes[i].Voter || !slices.Equal(r.Votes[i].Failed, o.Votes[i].Failed) {
			return false
		}
	}
	return true
}

// Annotation is the report as the Lease's annotation value.
func (r *Report) Annotation() (string, error) {
	b, err := json.Marshal(r)
	return string(b), err
}
