package v1_test

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

func spec() *appsv1.DeploymentSpec {
	l := map[string]string{"app": "x"}
	return &appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: l},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}}},
	}
}

// superedgeManifest is a DeploymentGrid as SuperEdge users write it.
const superedgeManifest = `
apiVersion: superedge.io/v1
kind: DeploymentGrid
metadata:
  name: deploymentgrid-demo
  namespace: default
spec:
  gridUniqKey: zone1
  defaultTemplateName: test1
  templatePool:
    test1:
      replicas: 2
      selector:
        matchLabels:
          appGrid: echo
      template:
        metadata:
          labels:
            appGrid: echo
        spec:
          containers:
          - image: superedge/echoserver:2.2
            name: echo
  templates:
    zone1: test1
`

// TestValidation: bad grids are refused by the apiserver with a message that
// names the problem; SuperEdge's manifests are accepted unchanged.
func TestValidation(t *testing.T) {
	cfg := testenv.StartEnvtest(t)
	scheme := runtime.NewScheme()
	if err := gridv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	dg := func(name string, mutate func(*gridv1.DeploymentGridSpec)) client.Object {
		s := gridv1.DeploymentGridSpec{GridUniqKey: "zone", Template: spec()}
		mutate(&s)
		return &gridv1.DeploymentGrid{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: s}
	}
	sg := func(name string) client.Object {
		return &gridv1.ServiceGrid{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: gridv1.ServiceGridSpec{
			GridUniqKey: "zone", Template: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}}
	}
	cases := []struct {
		name    string
		obj     client.Object
		wantErr string
	}{
		{"plain grid", dg("ok", func(*gridv1.DeploymentGridSpec) {}), ""},
		{"missing gridUniqKey", dg("no-key", func(s *gridv1.DeploymentGridSpec) { s.GridUniqKey = "" }), "spec.gridUniqKey"},
		{"bad gridUniqKey", dg("bad-key", func(s *gridv1.DeploymentGridSpec) { s.GridUniqKey = "not a key" }), "spec.gridUniqKey"},
		{"templates names a missing template", dg("bad-templates", func(s *gridv1.DeploymentGridSpec) {
			s.TemplatePool = map[string]appsv1.DeploymentSpec{"big": *spec()}
			s.Templates = map[string]string{"a": "huge"}
		}), "every spec.templates entry must name a template in spec.templatePool"},
		{"defaultTemplateName names a missing template", dg("bad-default", func(s *gridv1.DeploymentGridSpec) { s.DefaultTemplateName = "huge" }), "spec.defaultTemplateName must be"},
		{"no template at all", dg("no-template", func(s *gridv1.DeploymentGridSpec) { s.Template = nil }), "spec.template is required"},
		{"override that selects nothing", dg("bad-override", func(s *gridv1.DeploymentGridSpec) {
			s.Overrides = []gridv1.Override{{Replicas: new(int32)}}
		}), "an override must select units"},
		{"override patch with a bad op", dg("bad-op", func(s *gridv1.DeploymentGridSpec) {
			s.Overrides = []gridv1.Override{{Units: []string{"a"}, Patches: []gridv1.JSONPatch{{Op: "merge", Path: "/replicas"}}}}
		}), `Unsupported value: "merge"`},
		{"override patch with a bad path", dg("bad-path", func(s *gridv1.DeploymentGridSpec) {
			s.Overrides = []gridv1.Override{{Units: []string{"a"}, Patches: []gridv1.JSONPatch{{Op: "remove", Path: "replicas"}}}}
		}), "spec.overrides[0].patches[0].path"},
		{"move without from", dg("bad-move", func(s *gridv1.DeploymentGridSpec) {
			s.Overrides = []gridv1.Override{{Units: []string{"a"}, Patches: []gridv1.JSONPatch{{Op: "move", Path: "/replicas"}}}}
		}), "move and copy operations need from"},
		{"gridUniqKey with a prefix", dg("prefixed-key", func(s *gridv1.DeploymentGridSpec) { s.GridUniqKey = "sitegrid.io/site" }), ""},
		{"gridUniqKey with a prefix too long for a label key", dg("long-prefix", func(s *gridv1.DeploymentGridSpec) {
			s.GridUniqKey = strings.Repeat("a", 254) + "/site"
		}), "the prefix of gridUniqKey"},
		{"negative template replicas", dg("minus", func(s *gridv1.DeploymentGridSpec) { s.Template.Replicas = ptr.To[int32](-5) }),
			"spec.template.replicas must not be negative"},
		{"negative replicas in the pool", dg("minus-pool", func(s *gridv1.DeploymentGridSpec) {
			big := spec()
			big.Replicas = ptr.To[int32](-1)
			s.TemplatePool = map[string]appsv1.DeploymentSpec{"big": *big}
		}), "the replicas of a spec.templatePool entry must not be negative"},
		{"template with nodeName", dg("node-name", func(s *gridv1.DeploymentGridSpec) { s.Template.Template.Spec.NodeName = "n1" }),
			"spec.template must not set nodeName"},
		{"override patch to nodeName", dg("patch-node-name", func(s *gridv1.DeploymentGridSpec) {
			s.Overrides = []gridv1.Override{{Units: []string{"a"}, Patches: []gridv1.JSONPatch{{Op: "add", Path: "/template/spec/nodeName", Value: &apiextensionsv1.JSON{Raw: []byte(`"n1"`)}}}}}
		}), "a patch must not set nodeName"},
		{"override nodeSelector on the unit key", dg("pin-selector", func(s *gridv1.DeploymentGridSpec) {
			s.Overrides = []gridv1.Override{{Units: []string{"a"}, NodeSelector: map[string]string{"zone": "b"}}}
		}), "an override's nodeSelector must not set gridUniqKey"},
		{"ServiceGrid named for a Service", sg("web"), ""},
		{"ServiceGrid whose Service name is no DNS label", sg("a.b"), "a ServiceGrid's name must be a DNS label"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Create(context.Background(), tc.obj)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}

	t.Run("SuperEdge manifest", func(t *testing.T) {
		obj := &gridv1.DeploymentGrid{}
		if err := yaml.Unmarshal([]byte(superedgeManifest), obj); err != nil {
			t.Fatal(err)
		}
		if err := c.Create(context.Background(), obj); err != nil {
			t.Fatalf("SuperEdge's manifest refused: %v", err)
		}
		got := &gridv1.DeploymentGrid{}
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.TemplatePool["test1"].Template.Labels["appGrid"] != "echo" {
			t.Errorf("pod template labels pruned: %+v", got.Spec.TemplatePool["test1"].Template.ObjectMeta)
		}
	})
}
