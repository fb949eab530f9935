package grid

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

func baseSpec() *appsv1.DeploymentSpec {
	return &appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](1),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "web", Image: "web:1", Env: []corev1.EnvVar{{Name: "MODE", Value: "cloud"}}}},
				Volumes:    []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}}},
			},
		},
	}
}

func access(s *appsv1.DeploymentSpec) workloadSpec { return deploymentSpec{s} }

func TestChooseTemplate(t *testing.T) {
	base := baseSpec()
	big := baseSpec()
	big.Replicas = ptr.To[int32](5)
	pool := map[string]appsv1.DeploymentSpec{"big": *big}
	cases := []struct {
		name, defaultName, value string
		templates                map[string]string
		wantReplicas             int32
		wantErr                  string
	}{
		{name: "default is spec.template", defaultName: "default", value: "a", wantReplicas: 1},
		{name: "templates names a pool entry", defaultName: "default", value: "a", templates: map[string]string{"a": "big"}, wantReplicas: 5},
		{name: "defaultTemplateName from the pool", defaultName: "big", value: "b", wantReplicas: 5},
		{name: "unknown template", defaultName: "default", value: "a", templates: map[string]string{"a": "huge"}, wantErr: `template "huge"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := chooseTemplate(base, pool, tc.templates, tc.defaultName, tc.value)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got.Replicas != tc.wantReplicas {
				t.Errorf("replicas %d, want %d", *got.Replicas, tc.wantReplicas)
			}
		})
	}
}

func TestApplyOverrides(t *testing.T) {
	raw := func(s string) *apiextensionsv1.JSON { return &apiextensionsv1.JSON{Raw: []byte(s)} }
	overrides := []gridv1.Override{
		{Name: "north", Units: []string{"north"}, Replicas: ptr.To[int32](3),
			Images: []gridv1.ContainerImage{{Container: "web", Image: "web:2"}},
			Env:    []gridv1.ContainerEnv{{Env: []corev1.EnvVar{{Name: "MODE", Value: "edge"}, {Name: "SITE", Value: "north"}}}}},
		{Name: "per-site config", UnitSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "shop"}},
			NodeSelector: map[string]string{"disk": "ssd"},
			Resources: []gridv1.ContainerResources{{Container: "web", Resources: corev1.ResourceRequirements{
				Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}}}},
			Tolerations: []corev1.Toleration{{Key: "edge", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
			Patches:     []gridv1.JSONPatch{{Op: "replace", Path: "/template/spec/volumes/0/configMap/name", Value: raw(`"app-config-${unit}"`)}}},
	}
	got, err := applyOverrides(baseSpec(), access, overrides, unitInfo{value: "north", labels: map[string]string{"tier": "shop"}})
	if err != nil {
		t.Fatal(err)
	}
	want := baseSpec()
	want.Replicas = ptr.To[int32](3)
	want.Template.Spec.Containers[0].Image = "web:2"
	want.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "MODE", Value: "edge"}, {Name: "SITE", Value: "north"}}
	want.Template.Spec.NodeSelector = map[string]string{"disk": "ssd"}
	want.Template.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}
	want.Template.Spec.Tolerations = []corev1.Toleration{{Key: "edge", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	want.Template.Spec.Volumes[0].ConfigMap.Name = "app-config-north"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("north (-want +got):\n%s", diff)
	}

	untouched, err := applyOverrides(baseSpec(), access, overrides, unitInfo{value: "south"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(baseSpec(), untouched); diff != "" {
		t.Errorf("an unselected unit changed (-want +got):\n%s", diff)
	}

	for name, bad := range map[string]gridv1.Override{
		"unknown container":         {Units: []string{"a"}, Images: []gridv1.ContainerImage{{Container: "nope", Image: "x"}}},
		"patch that does not apply": {Units: []string{"a"}, Patches: []gridv1.JSONPatch{{Op: "replace", Path: "/template/spec/volumes/7/name", Value: raw(`"x"`)}}},
		"patch to an unknown field": {Units: []string{"a"}, Patches: []gridv1.JSONPatch{{Op: "add", Path: "/bogus", Value: raw(`1`)}}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := applyOverrides(baseSpec(), access, []gridv1.Override{bad}, unitInfo{value: "a"}); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestPinToUnit(t *testing.T) {
	s := baseSpec()
	pinToUnit(access(s), "web", "zones", "zones-a")
	if s.Template.Spec.NodeSelector["zones"] != "zones-a" {
		t.Errorf("node selector %v", s.Template.Spec.NodeSelector)
	}
	for _, l := range []map[string]string{s.Selector.MatchLabels, s.Template.Labels} {
		if l[gridv1.LabelGridSelector] != "web" || l[gridv1.LabelGridUnit] != "zones-a" || l["app"] != "web" {
			t.Errorf("labels %v", l)
		}
	}
	if baseSpec().Selector.MatchLabels[gridv1.LabelGridUnit] != "" {
		t.Error("the template's selector was changed in place")
	}
}

func TestChildName(t *testing.T) {
	for _, tc := range []struct {
		grid, value string
		max         int
		want        string
	}{
		{"web", "zones-a", 253, "web-zones-a"},
		{"web", "Shop_1", 253, "web-shop-1-"},
		{"db", strings.Repeat("x", 60), 52, "db-x"},
	} {
		got := ChildName(tc.grid, tc.value, tc.max)
		if !strings.HasPrefix(got, tc.want) || len(got) > tc.max {
			t.Errorf("ChildName(%q, %q, %d) = %q, want prefix %q and at most %d characters", tc.grid, tc.value, tc.max, got, tc.want, tc.max)
		}
		if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
			t.Errorf("%q: %v", got, errs)
		}
	}
	if ChildName("web", "Shop_1", 253) == ChildName("web", "shop-1", 253) {
		t.Error("values Shop_1 and shop-1 share a child name")
	}
}
