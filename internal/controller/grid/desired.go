// Package grid holds the controllers of DeploymentGrid, StatefulSetGrid and
// ServiceGrid: one child per unit value, with per-unit templates and
// overrides, staged rollouts, and a grace period before a vanished unit's
// child is removed.
package grid

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// workloadSpec is what the controller changes in a DeploymentSpec or a
// StatefulSetSpec.
type workloadSpec interface {
	podTemplate() *corev1.PodTemplateSpec
	replicas() **int32
	selector() **metav1.LabelSelector
}

// unitInfo is what overrides may select a unit by.
type unitInfo struct {
	// value of the gridUniqKey label.
	value string
	// labels of the NodeUnit named value, if there is one.
	labels map[string]string
}

// chooseTemplate picks the template of a unit: templates[value] from the
// pool, else defaultTemplateName from the pool, else spec.template. It
// returns the template's name for status and events.
func chooseTemplate[S any](base *S, pool map[string]S, templates map[string]string, defaultName, value string) (*S, string, error) {
	name := defaultName
	if t, ok := templates[value]; ok {
		name = t
	}
	if name == "" || name == "default" {
		if base == nil {
			return nil, "", fmt.Errorf("unit %s uses spec.template, which is not set", value)
		}
		return base, "default", nil
	}
	t, ok := pool[name]
	if !ok {
		return nil, "", fmt.Errorf("unit %s uses template %q, which is not in spec.templatePool", value, name)
	}
	return &t, name, nil
}

// applyOverrides applies every override that selects the unit, in order.
func applyOverrides[S any](spec *S, access func(*S) workloadSpec, overrides []gridv1.Override, unit unitInfo) (*S, error) {
	for i := range overrides {
		o := &overrides[i]
		selected, err := overrideSelects(o, unit)
		if err != nil {
			return nil, fmt.Errorf("override %s: %w", overrideName(o, i), err)
		}
		if !selected {
			continue
		}
		ws := access(spec)
		if o.Replicas != nil {
			r := *o.Replicas
			*ws.replicas() = &r
		}
		pod := &ws.podTemplate().Spec
		for _, img := range o.Images {
			if !setImage(pod, img.Container, img.Image) {
				return nil, fmt.Errorf("override %s: no container %q", overrideName(o, i), img.Container)
			}
		}
		for _, e := range o.Env {
			if !setEnv(pod, e.Container, e.Env) {
				return nil, fmt.Errorf("override %s: no container %q", overrideName(o, i), e.Container)
			}
		}
		for _, r := range o.Resources {
			if !forContainer(pod, r.Container, func(c *corev1.Container) { c.Resources = *r.Resources.DeepCopy() }) {
				return nil, fmt.Errorf("override %s: no container %q", overrideName(o, i), r.Container)
			}
		}
		if len(o.NodeSelector) > 0 && pod.NodeSelector == nil {
			pod.NodeSelector = map[string]string{}
		}
		for k, v := range o.NodeSelector {
			pod.NodeSelector[k] = v
		}
		pod.Tolerations = append(pod.Tolerations, o.Tolerations...)
		if len(o.Patches) > 0 {
			patched, err := applyPatches(spec, o.Patches, unit.value)
			if err != nil {
				return nil, fmt.Errorf("override %s: %w", overrideName(o, i), err)
			}
			spec = patched
		}
	}
	return spec, nil
}

func overrideName(o *gridv1.Override, i int) string {
	if o.Name != "" {
		return fmt.Sprintf("%q", o.Name)
	}
	return fmt.Sprintf("#%d", i)
}

func overrideSelects(o *gridv1.Override, unit unitInfo) (bool, error) {
	if slices.Contains(o.Units, unit.value) {
		return true, nil
	}
	if o.UnitSelector == nil {
		return false, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(o.UnitSelector)
	if err != nil {
		return false, err
	}
	return unit.labels != nil && sel.Matches(labels.Set(unit.labels)), nil
}

// forContainer calls f on the named container or init container.
func forContainer(pod *corev1.PodSpec, name string, f func(*corev1.Container)) bool {
	found := false
	for _, list := range [][]corev1.Container{pod.Containers, pod.InitContainers} {
		for i := range list {
			if list[i].Name == name {
				f(&list[i])
				found = true
			}
		}
	}
	return found
}

func setImage(pod *corev1.PodSpec, container, image string) bool {
	return forContainer(pod, container, func(c *corev1.Container) { c.Image = image })
}

func setEnv(pod *corev1.PodSpec, container string, env []corev1.EnvVar) bool {
	set := func(c *corev1.Container) {
		for _, e := range env {
			i := slices.IndexFunc(c.Env, func(have corev1.EnvVar) bool { return have.Name == e.Name })
			if i >= 0 {
				c.Env[i] = *e.DeepCopy()
			} else {
				c.Env = append(c.Env, *e.DeepCopy())
			}
		}
	}
	if container != "" {
		return forContainer(pod, container, set)
	}
	for i := range pod.Containers {
		set(&pod.Containers[i])
	}
	return true
}

// applyPatches runs RFC 6902 operations on the JSON of spec, with ${unit}
// replaced by the unit value in every string of the operations' values.
func applyPatches[S any](spec *S, patches []gridv1.JSONPatch, unitValue string) (*S, error) {
	ops := make([]map[string]any, 0, len(patches))
	for _, p := range patches {
		op := map[string]any{"op": p.Op, "path": p.Path}
		if p.From != "" {
			op["from"] = p.From
		}
		if p.Value != nil {
			var v any
			if err := json.Unmarshal(p.Value.Raw, &v); err != nil {
				return nil, fmt.Errorf("patch %s %s: value: %w", p.Op, p.Path, err)
			}
			op["value"] = substitute(v, unitValue)
		}
		ops = append(ops, op)
	}
	patchJSON, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	patch, err := jsonpatch.DecodePatch(patchJSON)
	if err != nil {
		return nil, err
	}
	doc, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	out, err := patch.Apply(doc)
	if err != nil {
		return nil, fmt.Errorf("patch does not apply: %w", err)
	}
	var patched S
	dec := json.NewDecoder(strings.NewReader(string(out)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&patched); err != nil {
		return nil, fmt.Errorf("patched spec is not valid: %w", err)
	}
	return &patched, nil
}

// substitute replaces the unit placeholder in every string of v.
func substitute(v any, unitValue string) any {
	switch t := v.(type) {
	case string:
		return strings.ReplaceAll(t, gridv1.UnitPlaceholder, unitValue)
	case []any:
		for i := range t {
			t[i] = substitute(t[i], unitValue)
		}
		return t
	case map[string]any:
		for k := range t {
			t[k] = substitute(t[k], unitValue)
		}
		return t
	default:
		return v
	}
}

// specHash identifies a desired spec; a child is rewritten only when it
// changes.
func specHash(spec any) (string, error) {
	data, err := json.Marshal(spec)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:16], nil
}
