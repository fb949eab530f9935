package grid

import (
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// unitPlan is the desired state of one unit.
type unitPlan[C client.Object, S any] struct {
	value string
	name  string
	// spec is nil when the unit's child is known to be current.
	spec *S
	hash string
	// child is the unit's child, when has.
	child C
	has   bool
}

// desiredInput is what the desired state of a grid's units is computed
// from; everything in it was read before.
type desiredInput[S any] struct {
	grid string
	spec gridSpec[S]
	// values are the unit values, sorted.
	values []string
	// unitLabels are the labels of the NodeUnits named by unit values, for
	// unitSelector overrides.
	unitLabels map[string]map[string]string
	// existing names the child each unit value has, vanished units'
	// included.
	existing map[string]string
	// adopted marks the unit values whose child SuperEdge made: it keeps
	// its selector and pod labels (adopt.go).
	adopted map[string]bool
	// current returns the desired hash of a unit whose child is known to be
	// current, so its spec need not be built again; nil for none.
	current func(value string) (string, bool)
}

// desiredState is every unit's plan, or why it has none.
type desiredState[C client.Object, S any] struct {
	plans    []*unitPlan[C, S]
	failures []unitFailure
}

// desiredUnits computes the desired copy of every unit: its child's name
// (distinct for distinct values), its spec (template, overrides, pinned to
// the unit) and the spec's hash. It reads nothing and writes nothing.
func desiredUnits[G, C client.Object, S any](k workloadKind[G, C, S], in desiredInput[S]) desiredState[C, S] {
	var out desiredState[C, S]
	names, clashes := assignChildNames(in.grid, in.values, k.maxNameLen, in.existing)
	for _, c := range clashes {
		out.failures = append(out.failures, unitFailure{value: c.value, child: c.name, reason: gridv1.ReasonNameClash,
			message: fmt.Sprintf("units %q and %q both map to %s %s; unit %q gets no copy", c.value, c.with, k.kind, c.name, c.value)})
	}
	for _, value := range in.values {
		name, named := names[value]
		if !named {
			continue
		}
		if in.current != nil {
			if h, ok := in.current(value); ok {
				out.plans = append(out.plans, &unitPlan[C, S]{value: value, name: name, hash: h})
				continue
			}
		}
		s, hash, reason, err := unitSpec(k, in.spec, in.grid, unitInfo{value: value, labels: in.unitLabels[value]}, in.adopted[value])
		if err != nil {
			out.failures = append(out.failures, unitFailure{value: value, child: name, reason: reason, message: fmt.Sprintf("unit %s: %v", value, err)})
			continue
		}
		out.plans = append(out.plans, &unitPlan[C, S]{value: value, name: name, spec: s, hash: hash})
	}
	return out
}

// unitSpec is the spec of one unit's copy, or the reason it cannot be made.
func unitSpec[G, C client.Object, S any](k workloadKind[G, C, S], spec gridSpec[S], grid string, unit unitInfo, adopted bool) (*S, string, string, error) {
	base, _, err := chooseTemplate(spec.template, spec.pool, spec.templates, spec.defaultName, unit.value)
	if err != nil {
		return nil, "", gridv1.ReasonInvalidTemplate, err
	}
	if err := templatePinning(&k.access(base).podTemplate().Spec); err != nil {
		return nil, "", gridv1.ReasonInvalidTemplate, err
	}
	s, err := applyOverrides(k.copySpec(base), k.access, spec.overrides, unit)
	if err != nil {
		return nil, "", gridv1.ReasonInvalidOverride, err
	}
	if err := overridePinning(&k.access(base).podTemplate().Spec, &k.access(s).podTemplate().Spec, spec.uniqKey); err != nil {
		return nil, "", gridv1.ReasonPinningOverride, err
	}
	if adopted {
		pinByNodeSelector(k.access(s), spec.uniqKey, unit.value)
	} else {
		pinToUnit(k.access(s), grid, spec.uniqKey, unit.value)
	}
	hash, err := specHash(s)
	if err != nil {
		return nil, "", gridv1.ReasonInvalidOverride, err
	}
	return s, hash, "", nil
}
