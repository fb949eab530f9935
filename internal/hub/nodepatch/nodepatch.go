// Package nodepatch applies a strategic merge patch to a Node or a Pod, as
// the apiserver does, for the hub's offline answers to the kubelet's node
// and pod status patches.
//
// It exists so that the hub need not link k8s.io/apimachinery's
// strategicpatch package, which brings kube-openapi, gnostic, go-openapi
// and a YAML parser with it, and k8s.io/api/core/v1, whose struct tags it
// reads the patch strategies from: together 4 MiB of the hub's resident
// memory (docs/hub.md). The semantics are strategicpatch's for applying a
// patch (directives $patch, $retainKeys, $setElementOrder/,
// $deleteFromPrimitiveList/, nulls, merge keys, element order), with the
// Node's and the Pod's patch strategies in tables. Tests check the tables
// against core/v1's struct tags and results against strategicpatch's.
package nodepatch

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/json"
)

// Strategy is the patch strategy and merge key of a list field.
type Strategy struct {
	Strategy string // "merge", or "" (replace)
	MergeKey string
}

// NodeStrategies are the patch strategies of core/v1 Node, by field path
// (JSON names, dot separated; a list's elements share the list's path).
// Every other list is replaced by a patch, every map merged.
var NodeStrategies = map[string]Strategy{
	"metadata.ownerReferences": {"merge", "uid"},
	"metadata.finalizers":      {"merge", ""},
	"spec.podCIDRs":            {"merge", ""},
	"status.conditions":        {"merge", "type"},
	"status.addresses":         {"merge", "type"},
}

// PodStrategies are the patch strategies of core/v1 Pod's metadata and
// status (a kubelet's status patch touches nothing else; its spec would be
// refused before any merge).
var PodStrategies = map[string]Strategy{
	"metadata.finalizers":                                        {"merge", ""},
	"metadata.ownerReferences":                                   {"merge", "uid"},
	"status.conditions":                                          {"merge", "type"},
	"status.containerStatuses.allocatedResourcesStatus":          {"merge", "name"},
	"status.containerStatuses.volumeMounts":                      {"merge", "mountPath"},
	"status.ephemeralContainerStatuses.allocatedResourcesStatus": {"merge", "name"},
	"status.ephemeralContainerStatuses.volumeMounts":             {"merge", "mountPath"},
	"status.hostIPs":                                             {"merge", "ip"},
	"status.initContainerStatuses.allocatedResourcesStatus":      {"merge", "name"},
	"status.initContainerStatuses.volumeMounts":                  {"merge", "mountPath"},
	"status.nodeAllocatableResourceClaimStatuses":                {"merge", "resourceClaimName"},
	"status.nodeAllocatableResourceClaimStatuses.mapping":        {"merge", "name"},
	"status.nodeAllocatableResourceClaimStatuses.overhead":       {"merge", "name"},
	"status.podIPs":                                              {"merge", "ip"},
	"status.resourceClaimStatuses":                               {"merge,retainKeys", "name"},
	"status.volumeHealth.healthConditions":                       {"merge", "status"},
}

// merges reports a list strategy that merges ("merge", "merge,retainKeys").
func (s Strategy) merges() bool {
	for _, part := range strings.Split(s.Strategy, ",") {
		if part == merge {
			return true
		}
	}
	return false
}

const (
	directive       = "$patch"
	replace         = "replace"
	deleteDirective = "delete"
	merge           = "merge"
	retainKeys      = "$retainKeys"
	setOrderPrefix  = "$setElementOrder"
	deletePrefix    = "$deleteFromPrimitiveList"
)

// ErrBadJSON is returned for an original or patch that is not a JSON
// object.
var ErrBadJSON = errors.New("invalid JSON document")

// Apply applies a strategic merge patch to a Node's JSON. A patch the
// apiserver would refuse is an error; so is one that would make it panic
// (a merge key whose value is a list or a map).
func Apply(original, patch []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("malformed patch: %v", r)
		}
	}()
	return apply(original, patch, NodeStrategies)
}

// ApplyPod is Apply for a Pod's JSON: the kubelet's status patches.
func ApplyPod(original, patch []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("malformed patch: %v", r)
		}
	}()
	return apply(original, patch, PodStrategies)
}

func apply(original, patch []byte, strategies map[string]Strategy) ([]byte, error) {
	o, err := decode(original)
	if err != nil {
		return nil, err
	}
	p, err := decode(patch)
	if err != nil {
		return nil, err
	}
	m := merger{strategies}
	out, err := m.mergeMap(o, p, "")
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

func decode(b []byte) (map[string]any, error) {
	if b == nil {
		b = []byte("{}")
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, ErrBadJSON
	}
	return m, nil
}

type merger struct{ strategies map[string]Strategy }

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// mergeMap merges patch into original (both may be modified).
func (m merger) mergeMap(original, patch map[string]any, path string) (map[string]any, error) {
	if d, ok := patch[directive]; ok {
		switch d {
		case replace:
			delete(patch, directive)
			return patch, nil
		case deleteDirective:
			return map[string]any{}, nil
		}
		return nil, fmt.Errorf("%s: unknown %s directive %v", path, directive, d)
	}
	if original == nil {
		original = map[string]any{}
	}
	if err := applyRetainKeys(original, patch, path); err != nil {
		return nil, err
	}
	if err := m.applySetElementOrder(original, patch, path); err != nil {
		return nil, err
	}
	for k, pv := range patch {
		isDeleteList := false
		if strings.HasPrefix(k, deletePrefix) {
			field, err := extractKey(k, deletePrefix)
			if err != nil {
				return nil, err
			}
			k, isDeleteList = field, true
		}
		if pv == nil {
			delete(original, k)
			continue
		}
		ov, ok := original[k]
		if !ok || reflect.TypeOf(ov) != reflect.TypeOf(pv) {
			if !isDeleteList {
				discardNulls(pv)
				if v, keep := removeDirectives(pv); keep {
					original[k] = v
				} else {
					delete(original, k)
				}
			}
			continue
		}
		var err error
		switch ov := ov.(type) {
		case map[string]any:
			if m.strategies[join(path, k)].Strategy == replace {
				original[k] = pv
			} else {
				original[k], err = m.mergeMap(ov, pv.(map[string]any), join(path, k))
			}
		case []any:
			s := m.strategies[join(path, k)]
			if s.merges() || isDeleteList {
				original[k], err = m.mergeSlice(ov, pv.([]any), join(path, k), s.MergeKey, isDeleteList)
			} else {
				original[k] = pv
			}
		default:
			if v, keep := removeDirectives(pv); keep {
				original[k] = v
			} else {
				delete(original, k)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return original, nil
}

// applyRetainKeys clears the fields of original that a $retainKeys list
// does not name; every field the patch sets must be in it.
func applyRetainKeys(original, patch map[string]any, path string) error {
	rk, ok := patch[retainKeys]
	if !ok {
		return nil
	}
	delete(patch, retainKeys)
	list, ok := rk.([]any)
	if !ok {
		return fmt.Errorf("%s: %s must be a list", path, retainKeys)
	}
	keep := map[any]bool{}
	for _, v := range list {
		keep[v] = true
	}
	for k, v := range patch {
		if v == nil || strings.HasPrefix(k, deletePrefix) || strings.HasPrefix(k, setOrderPrefix) {
			continue
		}
		if !keep[k] {
			return fmt.Errorf("%s: field %q is not in %s", path, k, retainKeys)
		}
	}
	for k := range original {
		if !keep[k] {
			delete(original, k)
		}
	}
	return nil
}

// applySetElementOrder merges each list that has a $setElementOrder
// directive and puts its items in that order.
func (m merger) applySetElementOrder(original, patch map[string]any, path string) error {
	for key, order := range patch {
		if !strings.HasPrefix(key, setOrderPrefix) {
			continue
		}
		delete(patch, key)
		orderList, ok := order.([]any)
		if !ok {
			return fmt.Errorf("%s: %s must be a list", path, key)
		}
		field, err := extractKey(key, setOrderPrefix)
		if err != nil {
			return err
		}
		var origList, patchList []any
		ov, foundOrig := original[field]
		pv, foundPatch := patch[field]
		if foundOrig {
			if origList, ok = ov.([]any); !ok {
				return fmt.Errorf("%s.%s: not a list", path, field)
			}
		}
		if foundPatch {
			if patchList, ok = pv.([]any); !ok {
				return fmt.Errorf("%s.%s: not a list in the patch", path, field)
			}
		}
		s := m.strategies[join(path, field)]
		if err := validateOrder(patchList, orderList, s.MergeKey); err != nil {
			return fmt.Errorf("%s.%s: %w", path, field, err)
		}
		var merged []any
		switch {
		case foundOrig && !foundPatch:
			merged = origList
		case !foundOrig && foundPatch:
			v, _ := removeDirectives(patchList)
			merged = v.([]any)
		case foundOrig && foundPatch:
			if s.merges() {
				if merged, err = m.mergeSlice(origList, patchList, join(path, field), s.MergeKey, false); err != nil {
					return err
				}
			} else {
				merged = patchList
			}
		default:
			continue
		}
		var inPatch, serverOnly []any
		if s.MergeKey == "" {
			inPatch, serverOnly = partitionScalars(merged, orderList)
		} else if inPatch, serverOnly, err = partitionMaps(merged, orderList, s.MergeKey); err != nil {
			return err
		}
		kind, err := elementKind(origList, patchList)
		if err != nil {
			return fmt.Errorf("%s.%s: %w", path, field, err)
		}
		both, err := normalizeOrder(inPatch, serverOnly, orderList, origList, s.MergeKey, kind)
		if err != nil {
			return err
		}
		original[field] = both
		delete(patch, field)
	}
	return nil
}

// validateOrder checks that the patch's items (deletions aside) appear in
// the $setElementOrder list, in its order.
func validateOrder(patchList, order []any, mergeKey string) error {
	if len(order) == 0 || len(patchList) == 0 {
		return nil
	}
	items := patchList
	if mergeKey != "" {
		var err error
		if items, _, err = splitDeletions(patchList); err != nil {
			return err
		}
	}
	pi, oi := 0, 0
	for pi < len(items) && oi < len(order) {
		if hasDirective(items[pi]) {
			pi++
			continue
		}
		eq, err := sameKey(items[pi], order[oi], mergeKey)
		if err != nil {
			return err
		}
		if eq {
			pi++
		}
		oi++
	}
	if pi < len(items) && oi >= len(order) {
		return fmt.Errorf("the order of the patch list does not match %s", setOrderPrefix)
	}
	return nil
}

// mergeSlice merges a patch list into the original list of a merge field.
func (m merger) mergeSlice(original, patch []any, path, mergeKey string, isDeleteList bool) ([]any, error) {
	if len(original) == 0 && len(patch) == 0 {
		return original, nil
	}
	kind, err := elementKind(original, patch)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var merged []any
	if kind != reflect.Map {
		if isDeleteList {
			return deleteScalars(original, patch), nil
		}
		merged = dedupScalars(append(original, patch...))
	} else {
		if mergeKey == "" {
			return nil, fmt.Errorf("%s: cannot merge lists without merge key", path)
		}
		if original, patch, err = applyListDirectives(original, patch, mergeKey); err != nil {
			return nil, err
		}
		if merged, err = m.mergeByKey(original, patch, path, mergeKey); err != nil {
			return nil, err
		}
	}
	var inPatch, serverOnly []any
	if mergeKey == "" {
		inPatch, serverOnly = partitionScalars(merged, patch)
	} else if inPatch, serverOnly, err = partitionMaps(merged, patch, mergeKey); err != nil {
		return nil, err
	}
	return normalizeOrder(inPatch, serverOnly, patch, original, mergeKey, kind)
}

// applyListDirectives applies the $patch items of a list of maps: delete
// removes the original's items with that key, replace makes the patch's
// plain items the whole list.
func applyListDirectives(original, patch []any, mergeKey string) ([]any, []any, error) {
	plain := []any{}
	replaceAll := false
	for _, v := range patch {
		item := v.(map[string]any)
		d, ok := item[directive]
		if !ok {
			plain = append(plain, v)
			continue
		}
		switch d {
		case deleteDirective:
			value, ok := item[mergeKey]
			if !ok {
				return nil, nil, fmt.Errorf("a %s: %s item has no merge key %q", directive, deleteDirective, mergeKey)
			}
			var err error
			if original, err = deleteByKey(original, mergeKey, value); err != nil {
				return nil, nil, err
			}
		case replace:
			replaceAll = true
		case merge:
			return nil, nil, errors.New("merging lists cannot yet be specified in the patch")
		default:
			return nil, nil, fmt.Errorf("unknown %s directive %v", directive, d)
		}
	}
	if replaceAll {
		return plain, nil, nil
	}
	return original, plain, nil
}

func deleteByKey(original []any, mergeKey string, value any) ([]any, error) {
	for {
		_, i, found, err := findByKey(original, mergeKey, value)
		if err != nil {
			return nil, err
		}
		if !found {
			return original, nil
		}
		original = append(original[:i], original[i+1:]...)
	}
}

// mergeByKey merges each patch item into the original item with its merge
// key value, or appends it.
func (m merger) mergeByKey(original, patch []any, path, mergeKey string) ([]any, error) {
	for _, v := range patch {
		item := v.(map[string]any)
		value, ok := item[mergeKey]
		if !ok {
			return nil, fmt.Errorf("%s: an item has no merge key %q", path, mergeKey)
		}
		o, i, found, err := findByKey(original, mergeKey, value)
		if err != nil {
			return nil, err
		}
		if !found {
			original = append(original, v)
			continue
		}
		merged, err := m.mergeMap(o, item, path)
		if err != nil {
			return nil, err
		}
		original[i] = merged
	}
	return original, nil
}

func findByKey(list []any, mergeKey string, value any) (map[string]any, int, bool, error) {
	for i, v := range list {
		item, ok := v.(map[string]any)
		if !ok {
			return nil, 0, false, fmt.Errorf("list item %d is not a map", i)
		}
		if got, ok := item[mergeKey]; ok && got == value {
			return item, i, true, nil
		}
	}
	return nil, 0, false, nil
}

func deleteScalars(current, toDelete []any) []any {
	del := map[any]bool{}
	for _, v := range toDelete {
		del[v] = true
	}
	out := make([]any, 0, len(current))
	for _, v := range current {
		if !del[v] {
			out = append(out, v)
		}
	}
	return out
}

// dedupScalars removes duplicates in place, moving the last item into each
// duplicate's place (the apiserver's order, which the final ordering step
// then corrects).
func dedupScalars(s []any) []any {
	last := len(s) - 1
	for i := 0; i < last; i++ {
		for j := i + 1; j <= last; j++ {
			if s[i] == s[j] {
				s[j] = s[last]
				s = s[:last]
				last--
				j--
			}
		}
	}
	return s
}

func partitionScalars(list, by []any) (inBy, rest []any) {
	in := map[any]bool{}
	for _, v := range by {
		in[v] = true
	}
	inBy, rest = make([]any, 0, len(list)), make([]any, 0, len(list))
	for _, v := range list {
		if in[v] {
			inBy = append(inBy, v)
		} else {
			rest = append(rest, v)
		}
	}
	return inBy, rest
}

func partitionMaps(list, by []any, mergeKey string) (inBy, rest []any, err error) {
	inBy, rest = make([]any, 0, len(list)), make([]any, 0, len(list))
	for _, v := range list {
		item, ok := v.(map[string]any)
		if !ok {
			return nil, nil, errors.New("a list item is not a map")
		}
		value, ok := item[mergeKey]
		if !ok {
			return nil, nil, fmt.Errorf("a list item has no merge key %q", mergeKey)
		}
		_, _, found, err := findByKey(by, mergeKey, value)
		if err != nil {
			return nil, nil, err
		}
		if found {
			inBy = append(inBy, v)
		} else {
			rest = append(rest, v)
		}
	}
	return inBy, rest, nil
}

// normalizeOrder orders the patch's items by patchOrder and the others by
// serverOrder, then interleaves them keeping the server's relative order
// where both are known.
func normalizeOrder(patch, serverOnly, patchOrder, serverOrder []any, mergeKey string, kind reflect.Kind) ([]any, error) {
	patch, err := sortBy(patch, patchOrder, mergeKey, kind)
	if err != nil {
		return nil, err
	}
	if serverOnly, err = sortBy(serverOnly, serverOrder, mergeKey, kind); err != nil {
		return nil, err
	}
	return interleave(serverOnly, patch, serverOrder, mergeKey, kind), nil
}

func sortBy(list, order []any, mergeKey string, kind reflect.Kind) ([]any, error) {
	var deletions []any
	if kind == reflect.Map {
		for _, l := range [][]any{list, order} {
			for _, v := range l {
				item, ok := v.(map[string]any)
				if !ok {
					return nil, errors.New("a list item is not a map")
				}
				if _, ok := item[mergeKey]; !ok {
					return nil, fmt.Errorf("a list item has no merge key %q", mergeKey)
				}
			}
		}
		var err error
		if list, deletions, err = splitDeletions(list); err != nil {
			return nil, err
		}
	}
	// The apiserver's comparison: items missing from order count as less.
	sort.SliceStable(list, func(i, j int) bool {
		if ii := indexOf(order, list[i], mergeKey, kind); ii >= 0 {
			if ij := indexOf(order, list[j], mergeKey, kind); ij >= 0 {
				return ii < ij
			}
		}
		return true
	})
	return append(list, deletions...), nil
}

func interleave(left, right, serverOrder []any, mergeKey string, kind reflect.Kind) []any {
	out := make([]any, len(left)+len(right))
	i, j := 0, 0
	for k := range out {
		switch {
		case i >= len(left) && j < len(right):
			out[k] = right[j]
			j++
		case j >= len(right) && i < len(left):
			out[k] = left[i]
			i++
		default:
			li, ri := indexOf(serverOrder, left[i], mergeKey, kind), indexOf(serverOrder, right[j], mergeKey, kind)
			if li >= 0 && ri >= 0 && li < ri {
				out[k] = left[i]
				i++
			} else {
				out[k] = right[j]
				j++
			}
		}
	}
	return out
}

func indexOf(list []any, v any, mergeKey string, kind reflect.Kind) int {
	val := func(x any) any { return x }
	if kind == reflect.Map {
		val = func(x any) any {
			item, ok := x.(map[string]any)
			if !ok {
				return nil
			}
			return item[mergeKey]
		}
	}
	want := val(v)
	for i, x := range list {
		if val(x) == want {
			return i
		}
	}
	return -1
}

func splitDeletions(list []any) (keep, deletions []any, err error) {
	for _, v := range list {
		item, ok := v.(map[string]any)
		if !ok {
			return nil, nil, errors.New("a list item is not a map")
		}
		if d, ok := item[directive]; ok && d == deleteDirective {
			deletions = append(deletions, v)
		} else {
			keep = append(keep, v)
		}
	}
	return keep, deletions, nil
}

func hasDirective(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	_, ok = m[directive]
	return ok
}

func sameKey(a, b any, mergeKey string) (bool, error) {
	if mergeKey == "" {
		return a == b, nil
	}
	am, ok1 := a.(map[string]any)
	bm, ok2 := b.(map[string]any)
	if !ok1 || !ok2 {
		return false, errors.New("a list item is not a map")
	}
	av, ok1 := am[mergeKey]
	bv, ok2 := bm[mergeKey]
	if !ok1 || !ok2 {
		return false, fmt.Errorf("a list item has no merge key %q", mergeKey)
	}
	return av == bv, nil
}

// elementKind is the kind of the lists' items, which must all have one
// type and not be lists.
func elementKind(lists ...[]any) (reflect.Kind, error) {
	var t reflect.Type
	for _, l := range lists {
		for _, v := range l {
			vt := reflect.TypeOf(v)
			switch {
			case t == nil:
				if vt != nil && vt.Kind() == reflect.Slice {
					return 0, errors.New("lists of lists are not supported")
				}
				t = vt
			case t != vt:
				return 0, errors.New("list items are not all of one type")
			}
		}
	}
	if t == nil {
		return 0, errors.New("no items in any of the lists")
	}
	return t.Kind(), nil
}

func extractKey(s, prefix string) (string, error) {
	parts := strings.SplitN(s, "/", 2)
	if len(parts) <= 1 || parts[0] != prefix {
		return "", fmt.Errorf("malformed directive %q", s)
	}
	return parts[1], nil
}

// removeDirectives drops the maps carrying $patch from a value taken whole
// from the patch; keep is false when v itself is one.
func removeDirectives(v any) (out any, keep bool) {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v[directive]; ok {
			return nil, false
		}
		for k, x := range v {
			var keep bool
			if v[k], keep = removeDirectives(x); !keep {
				delete(v, k)
			}
		}
		return v, true
	case []any:
		var res []any
		if v != nil {
			res = []any{}
		}
		for _, x := range v {
			if y, keep := removeDirectives(x); keep {
				res = append(res, y)
			}
		}
		return res, true
	}
	return v, true
}

func discardNulls(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if x == nil {
				delete(v, k)
			} else {
				discardNulls(x)
			}
		}
	case []any:
		for _, x := range v {
			discardNulls(x)
		}
	}
}
