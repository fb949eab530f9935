package site

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	sitev1 "github.com/sitegrid/sitegrid/api/site/v1alpha2"
)

// SuperEdge's default units, as its site-manager makes them: unit-node-all
// selects every Linux node; the role units select the nodes SuperEdge labels
// with node-role.kubernetes.io/Edge, /Cloud or /Master (value "").
const (
	UnitNodeAll    = "unit-node-all"
	UnitNodeEdge   = "unit-node-edge"
	UnitNodeCloud  = "unit-node-cloud"
	UnitNodeMaster = "unit-node-master"
)

var defaultUnits = map[string]sitev1.NodeUnitSpec{
	UnitNodeAll:    {Type: sitev1.OtherNodeUnit, Selector: &sitev1.Selector{MatchLabels: map[string]string{"kubernetes.io/os": "linux"}}},
	UnitNodeEdge:   {Type: sitev1.EdgeNodeUnit, Selector: &sitev1.Selector{MatchLabels: map[string]string{"node-role.kubernetes.io/Edge": ""}}},
	UnitNodeCloud:  {Type: sitev1.CloudNodeUnit, Selector: &sitev1.Selector{MatchLabels: map[string]string{"node-role.kubernetes.io/Cloud": ""}}},
	UnitNodeMaster: {Type: sitev1.MasterNodeUnit, Selector: &sitev1.Selector{MatchLabels: map[string]string{"node-role.kubernetes.io/Master": ""}}},
}

// DefaultUnitNames are the names EnsureDefaultUnits knows, sorted.
func DefaultUnitNames() []string {
	names := make([]string, 0, len(defaultUnits))
	for n := range defaultUnits {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// CheckDefaultUnits fails on a name that is not one of SuperEdge's default
// units.
func CheckDefaultUnits(names []string) error {
	for _, n := range names {
		if _, ok := defaultUnits[n]; !ok {
			return fmt.Errorf("%q is not one of SuperEdge's default units (%s)", n, strings.Join(DefaultUnitNames(), ", "))
		}
	}
	return nil
}

// EnsureDefaultUnits creates the named default units that do not exist. A
// unit of that name that exists is left as it is: SuperEdge made it, or the
// user changed it.
func EnsureDefaultUnits(ctx context.Context, c client.Client, names []string) error {
	if err := CheckDefaultUnits(names); err != nil {
		return err
	}
	for _, name := range slices.Sorted(slices.Values(names)) {
		spec := defaultUnits[name]
		u := &sitev1.NodeUnit{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: *spec.DeepCopy()}
		if err := c.Create(ctx, u); err != nil {
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return fmt.Errorf("create default unit %s: %w", name, err)
		}
		log.FromContext(ctx).Info("created SuperEdge's default unit", "unit", name)
	}
	return nil
}
