package grid

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"slices"
	"strings"
)

var notNameChars = regexp.MustCompile(`[^a-z0-9-]+`)

// ChildName is the name the child of a grid for one unit value gets when
// no other value claims it: "<grid>-<value>" (SuperEdge's naming), or, when
// that is not a valid name of at most maxLen characters, a cleaned and cut
// name with a hash of the value. maxLen is 63 for Services and 52 for
// StatefulSets (their names end up in DNS labels and pod labels) and 253
// for Deployments. assignChildNames decides when values clash.
func ChildName(grid, value string, maxLen int) string {
	return childNameCandidates(grid, value, maxLen)[0]
}

// childNameCandidates are the names the child of a unit value may get, in
// order of preference: SuperEdge's "<grid>-<value>" when it needs no
// cleaning, then the cleaned name with 8, then 16 hex digits of the value's
// hash.
func childNameCandidates(grid, value string, maxLen int) []string {
	var names []string
	raw := grid + "-" + value
	if clean := notNameChars.ReplaceAllString(raw, "-"); clean == raw && len(raw) <= maxLen && !strings.HasSuffix(raw, "-") {
		names = append(names, raw)
	}
	sum := sha256.Sum256([]byte(value))
	digest := hex.EncodeToString(sum[:])
	clean := strings.Trim(notNameChars.ReplaceAllString(strings.ToLower(raw), "-"), "-")
	for _, digits := range []int{8, 16} {
		name := clean
		if len(name) > maxLen-digits-1 {
			name = strings.TrimRight(name[:maxLen-digits-1], "-")
		}
		names = append(names, name+"-"+digest[:digits])
	}
	return names
}

// nameClash is a unit value that got no child name: every name it may have
// is another value's.
type nameClash struct {
	value string
	// with is the value holding the name value would have had.
	with, name string
}

// assignChildNames names the children of the unit values (sorted: the
// order decides who gets a contested name) so that
// no two values share one. A value keeps the name of the child it has
// (existing, vanished units' children included: their names stay taken
// until they are deleted); then values whose SuperEdge name needs no
// cleaning get it, so existing clusters keep their names; every other value
// gets its first free candidate. A value left without a name is a clash.
func assignChildNames(grid string, values []string, maxLen int, existing map[string]string) (map[string]string, []nameClash) {
	names := make(map[string]string, len(values))
	holder := map[string]string{} // name -> value
	present := make(map[string]bool, len(values))
	for _, v := range values {
		present[v] = true
	}
	for v, n := range existing {
		holder[n] = v
		if present[v] {
			names[v] = n
		}
	}
	take := func(v, n string) bool {
		if _, taken := holder[n]; taken {
			return false
		}
		holder[n], names[v] = v, n
		return true
	}
	candidates := make(map[string][]string, len(values))
	for _, v := range values {
		if _, named := names[v]; named {
			continue
		}
		candidates[v] = childNameCandidates(grid, v, maxLen)
		if raw := grid + "-" + v; candidates[v][0] == raw {
			take(v, raw)
		}
	}
	var clashes []nameClash
	for _, v := range values {
		if _, named := names[v]; named {
			continue
		}
		if !slices.ContainsFunc(candidates[v], func(n string) bool { return take(v, n) }) {
			clashes = append(clashes, nameClash{value: v, with: holder[candidates[v][0]], name: candidates[v][0]})
		}
	}
	return names, clashes
}
