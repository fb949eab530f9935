package grid

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

func TestAssignChildNames(t *testing.T) {
	candidates := func(value string) []string { return childNameCandidates("probe", value, 253) }
	dotted := candidates("a.b")[0]                    // probe-a-b-<8 hex>
	longer := candidates("a.b")[1]                    // probe-a-b-<16 hex>
	lookalike := strings.TrimPrefix(dotted, "probe-") // a value whose SuperEdge name is a.b's
	hashed := func(value string) string { return candidates(value)[1] }
	cases := []struct {
		name        string
		values      []string
		existing    map[string]string
		want        map[string]string
		wantClashes []nameClash
	}{
		{name: "SuperEdge names where no cleaning is needed", values: []string{"north", "south"},
			want: map[string]string{"north": "probe-north", "south": "probe-south"}},
		{name: "a value that cleans to another's name gets a longer hash", values: []string{"a.b", lookalike},
			want: map[string]string{"a.b": longer, lookalike: dotted}},
		{name: "an existing child keeps its name, the newcomer gets another", values: []string{"a.b", lookalike},
			existing: map[string]string{"a.b": dotted},
			want:     map[string]string{"a.b": dotted, lookalike: hashed(lookalike)}},
		{name: "a vanished unit's child keeps its name taken", values: []string{lookalike},
			existing: map[string]string{"a.b": dotted},
			want:     map[string]string{lookalike: hashed(lookalike)}},
		{name: "every name taken: a clash naming both values", values: []string{"a.b", lookalike, strings.TrimPrefix(longer, "probe-")},
			want:        map[string]string{lookalike: dotted, strings.TrimPrefix(longer, "probe-"): longer},
			wantClashes: []nameClash{{value: "a.b", with: lookalike, name: dotted}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, clashes := assignChildNames("probe", tc.values, 253, tc.existing)
			if !mapsEqual(got, tc.want) {
				t.Errorf("names %v, want %v", got, tc.want)
			}
			if !slices.Equal(clashes, tc.wantClashes) {
				t.Errorf("clashes %+v, want %+v", clashes, tc.wantClashes)
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func raw(s string) *apiextensionsv1.JSON { return &apiextensionsv1.JSON{Raw: []byte(s)} }

// TestDesiredUnitsPinning: an override that changes what pins a copy to its
// unit is reported for that unit and never applied; the other units get
// their copy.
func TestDesiredUnitsPinning(t *testing.T) {
	elsewhere := `{"containers":[{"name":"web","image":"web:1"}],"nodeName":"node-of-b"}`
	affinity := `{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"site","operator":"In","values":["b"]}]}]}}}`
	for name, tc := range map[string]struct {
		override gridv1.Override
		template func(*appsv1.DeploymentSpec)
		reason   string
		message  string
	}{
		"nodeName by a patch of the whole pod spec": {override: gridv1.Override{Units: []string{"a"},
			Patches: []gridv1.JSONPatch{{Op: "replace", Path: "/template/spec", Value: raw(elsewhere)}}},
			reason: gridv1.ReasonPinningOverride, message: "unit a: the overrides change nodeName"},
		"nodeSelector on the unit key": {override: gridv1.Override{Units: []string{"a"}, NodeSelector: map[string]string{"site": "b"}},
			reason: gridv1.ReasonPinningOverride, message: "nodeSelector site"},
		"node affinity on the unit key": {override: gridv1.Override{Units: []string{"a"},
			Patches: []gridv1.JSONPatch{{Op: "add", Path: "/template/spec/affinity", Value: raw(affinity)}}},
			reason: gridv1.ReasonPinningOverride, message: "node affinity on site"},
		"nodeName in the template": {template: func(s *appsv1.DeploymentSpec) { s.Template.Spec.NodeName = "n1" },
			reason: gridv1.ReasonInvalidTemplate, message: `the template sets nodeName "n1"`},
	} {
		t.Run(name, func(t *testing.T) {
			tmpl := baseSpec()
			if tc.template != nil {
				tc.template(tmpl)
			}
			spec := gridSpec[appsv1.DeploymentSpec]{uniqKey: "site", template: tmpl}
			if tc.override.Units != nil {
				spec.overrides = []gridv1.Override{tc.override}
			}
			d := desiredUnits(deploymentKind, desiredInput[appsv1.DeploymentSpec]{grid: "web", spec: spec, values: []string{"a", "b"}})
			if len(d.failures) == 0 || d.failures[0].value != "a" || d.failures[0].reason != tc.reason || !strings.Contains(d.failures[0].message, tc.message) {
				t.Fatalf("failures %+v, want unit a %s %q", d.failures, tc.reason, tc.message)
			}
			for _, p := range d.plans {
				if p.value == "a" {
					t.Errorf("unit a planned despite its override: %+v", p.spec.Template.Spec)
				}
				checkPinned(t, "site", p.value, &p.spec.Template)
			}
			if tc.template == nil && (len(d.plans) != 1 || d.plans[0].value != "b") {
				t.Errorf("plans %d, want unit b's", len(d.plans))
			}
		})
	}
}

// checkPinned fails unless the pod template runs only on nodes of the unit
// and carries the unit's label.
func checkPinned(t *testing.T, key, value string, pod *corev1.PodTemplateSpec) {
	t.Helper()
	if pod.Spec.NodeName != "" || pod.Spec.NodeSelector[key] != value || pod.Labels[gridv1.LabelGridUnit] != value {
		t.Errorf("unit %q: copy not pinned: nodeName %q nodeSelector %v labels %v", value, pod.Spec.NodeName, pod.Spec.NodeSelector, pod.Labels)
	}
}

// FuzzDesired: over random unit values, templates and overrides, the
// desired state never panics, never gives two units one child, never
// places a copy outside its unit, and never drops a unit without saying
// why.
func FuzzDesired(f *testing.F) {
	tmpl, _ := json.Marshal(baseSpec())
	seeds := []struct{ values, overrides string }{
		{"a,b,c", `[]`},
		{"a.b,a-b-2e7336dc,A_B,a--b", `[{"units":["a.b"],"replicas":3}]`},
		{"north,south", `[{"units":["north"],"patches":[{"op":"add","path":"/template/spec/nodeName","value":"x"}]}]`},
		{"north,south", `[{"units":["north"],"patches":[{"op":"replace","path":"/template/spec","value":{"containers":[],"nodeName":"n"}}]}]`},
		{"s1,s2", `[{"units":["s1"],"nodeSelector":{"site":"s2"}}]`},
		{"s1,s2", `[{"units":["s1","s2"],"patches":[{"op":"remove","path":"/template/spec/nodeSelector"},{"op":"remove","path":"/selector"}]}]`},
		{"s1", `[{"units":["s1"],"patches":[{"op":"replace","path":"/template/metadata/labels","value":{"superedge.io/grid-unit":"s2"}}]}]`},
		{"s1", `[{"units":["s1"],"patches":[{"op":"add","path":"/template/spec/affinity","value":{"nodeAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[{"weight":1,"preference":{"matchExpressions":[{"key":"site","operator":"In","values":["s2"]}]}}]}}}]}]`},
		{"x,y", `[{"units":["x"],"images":[{"container":"web","image":"${unit}"}],"env":[{"env":[{"name":"U","value":"${unit}"}]}]}]`},
		{"," + strings.Repeat("z", 63), `[{"units":[""],"patches":[{"op":"move","from":"/template/spec/containers","path":"/template/spec/initContainers"}]}]`},
	}
	for _, s := range seeds {
		f.Add(s.values, string(tmpl), s.overrides, false)
		f.Add(s.values, string(tmpl), s.overrides, true)
	}
	f.Fuzz(func(t *testing.T, valueList, template, overrides string, statefulSet bool) {
		var values []string
		for _, v := range strings.Split(valueList, ",") {
			if len(validation.IsValidLabelValue(v)) == 0 && !slices.Contains(values, v) { // node label values
				values = append(values, v)
			}
		}
		slices.Sort(values)
		var ovs []gridv1.Override
		if json.Unmarshal([]byte(overrides), &ovs) != nil {
			ovs = nil
		}
		if statefulSet {
			var s appsv1.StatefulSetSpec
			if json.Unmarshal([]byte(template), &s) != nil {
				t.Skip()
			}
			checkDesired(t, statefulSetKind, gridSpec[appsv1.StatefulSetSpec]{uniqKey: "site", template: &s, overrides: ovs}, values, func(s *appsv1.StatefulSetSpec) *corev1.PodTemplateSpec { return &s.Template })
			return
		}
		var d appsv1.DeploymentSpec
		if json.Unmarshal([]byte(template), &d) != nil {
			t.Skip()
		}
		checkDesired(t, deploymentKind, gridSpec[appsv1.DeploymentSpec]{uniqKey: "site", template: &d, overrides: ovs}, values, func(s *appsv1.DeploymentSpec) *corev1.PodTemplateSpec { return &s.Template })
	})
}

func checkDesired[G, C client.Object, S any](t *testing.T, k workloadKind[G, C, S], spec gridSpec[S], values []string, pod func(*S) *corev1.PodTemplateSpec) {
	d := desiredUnits(k, desiredInput[S]{grid: "web", spec: spec, values: values})
	owner := map[string]string{}
	accounted := map[string]bool{}
	for _, p := range d.plans {
		if other, dup := owner[p.name]; dup {
			t.Fatalf("units %q and %q share child %s", other, p.value, p.name)
		}
		owner[p.name] = p.value
		accounted[p.value] = true
		if errs := validation.IsDNS1123Subdomain(p.name); len(errs) > 0 || len(p.name) > k.maxNameLen {
			t.Errorf("unit %q: child name %q: %v", p.value, p.name, errs)
		}
		checkPinned(t, spec.uniqKey, p.value, pod(p.spec))
		sel := k.access(p.spec).selector()
		if (*sel).MatchLabels[gridv1.LabelGridUnit] != p.value {
			t.Errorf("unit %q: selector %v", p.value, (*sel).MatchLabels)
		}
	}
	for _, f := range d.failures {
		if accounted[f.value] {
			t.Errorf("unit %q both planned and failed (%s)", f.value, f.message)
		}
		accounted[f.value] = true
	}
	for _, v := range values {
		if !accounted[v] {
			t.Errorf("unit %q dropped without a failure", v)
		}
	}
}
