package v1alpha2

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestAutoUnitName(t *testing.T) {
	cases := []struct {
		name, group string
		values      []string
		want        string
	}{
		{"plain", "zones", []string{"a"}, "zones-a"},
		{"two keys", "sites", []string{"cn", "shop1"}, "sites-cn-shop1"},
		{"two keys, one with a dash, get a hash", "sites", []string{"cn", "shop-1"}, "sites-cn-shop-1-"},
		{"upper case gets a hash", "zones", []string{"A"}, "zones-a-"},
		{"dots and underscores get a hash", "zones", []string{"a_b.c"}, "zones-a-b-c-"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := AutoUnitName(tc.group, tc.values)
			if !strings.HasPrefix(got, tc.want) || (strings.HasSuffix(tc.want, "-") && len(got) != len(tc.want)+8) || (!strings.HasSuffix(tc.want, "-") && got != tc.want) {
				t.Errorf("AutoUnitName(%q, %q) = %q, want %q", tc.group, tc.values, got, tc.want)
			}
			if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 || len(got) > 63 {
				t.Errorf("%q is not a valid unit name: %v", got, errs)
			}
		})
	}
	long := AutoUnitName("group", []string{strings.Repeat("x", 63)})
	if len(long) > 63 {
		t.Errorf("long name %q has %d characters", long, len(long))
	}
	if AutoUnitName("zones", []string{"A"}) == AutoUnitName("zones", []string{"a"}) {
		t.Error("values differing in case share a unit name")
	}
	if AutoUnitName("g", []string{"a-b", "c"}) == AutoUnitName("g", []string{"a", "b-c"}) {
		t.Error("values (a-b, c) and (a, b-c) share a unit name")
	}
}
