package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const fieldManager = "sitegridctl-lab"

// InstallManifests server-side applies every YAML document in fsys (other
// than kustomization files), namespaced objects into the namespace they name.
func InstallManifests(ctx context.Context, cfg *rest.Config, fsys fs.FS) error {
	objs, err := readManifests(fsys)
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		data, err := obj.MarshalJSON()
		if err != nil {
			return err
		}
		ri := dyn.Resource(mapping.Resource)
		var target dynamic.ResourceInterface = ri
		if ns := obj.GetNamespace(); ns != "" {
			target = ri.Namespace(ns)
		}
		force := true
		if _, err := target.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: fieldManager, Force: &force}); err != nil {
			return fmt.Errorf("apply %s %s: %w", gvk.Kind, obj.GetName(), err)
		}
	}
	return waitServed(ctx, dc, objs)
}

// waitServed returns once discovery serves every version of every CRD
// among objs: an apply returns before that, and a client started right
// after (the manager) would find no such kind.
func waitServed(ctx context.Context, dc discovery.DiscoveryInterface, objs []*unstructured.Unstructured) error {
	type want struct{ groupVersion, plural string }
	var wants []want
	for _, obj := range objs {
		if obj.GetKind() != "CustomResourceDefinition" {
			continue
		}
		group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "plural")
		versions, _, _ := unstructured.NestedSlice(obj.Object, "spec", "versions")
		for _, v := range versions {
			if name, ok := v.(map[string]any)["name"].(string); ok {
				wants = append(wants, want{group + "/" + name, plural})
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, w := range wants {
		err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
			list, err := dc.ServerResourcesForGroupVersion(w.groupVersion)
			if err != nil {
				return false, nil // not yet
			}
			for _, r := range list.APIResources {
				if r.Name == w.plural {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("%s in %s not served: %w", w.plural, w.groupVersion, err)
		}
	}
	return nil
}

// readManifests decodes the manifests in fsys, Namespaces first so that
// namespaced objects find theirs.
func readManifests(fsys fs.FS) ([]*unstructured.Unstructured, error) {
	var namespaces, rest []*unstructured.Unstructured
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := path.Ext(p); (ext != ".yaml" && ext != ".yml") || strings.HasPrefix(path.Base(p), "kustomization.") {
			return nil
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := dec.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			if obj.GetKind() == "" || obj.GetName() == "" {
				return fmt.Errorf("%s: a document has no kind or name", p)
			}
			if obj.GetKind() == "Namespace" {
				namespaces = append(namespaces, obj)
			} else {
				rest = append(rest, obj)
			}
		}
	})
	return append(namespaces, rest...), err
}
