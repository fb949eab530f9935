package topology

import (
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// unitRules keeps the endpoints on nodes of unit "a" for the Services in
// filtered.
type unitRules struct{ filtered map[string]bool }

var unitA = map[string]bool{"a-1": true, "a-2": true}

func (r unitRules) Filters(ns, svc string) bool { return r.filtered[ns+"/"+svc] }
func (r unitRules) Keep(ns, svc, node string) bool {
	return !r.filtered[ns+"/"+svc] || unitA[node]
}

var rules = unitRules{filtered: map[string]bool{"shop/web": true}}

func nodesOf(t *testing.T, raw []byte, path ...string) []string {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatal(err)
	}
	var walk func(v any, path []string) []string
	walk = func(v any, path []string) []string {
		if len(path) == 0 {
			var out []string
			list, _ := v.([]any)
			for _, e := range list {
				if m, ok := e.(map[string]any); ok {
					if n, ok := m["nodeName"].(string); ok {
						out = append(out, n)
					}
				}
			}
			return out
		}
		var out []string
		switch x := v.(type) {
		case map[string]any:
			out = append(out, walk(x[path[0]], path[1:])...)
		case []any:
			for _, e := range x {
				out = append(out, walk(e, path)...)
			}
		}
		return out
	}
	return walk(obj, path)
}

func TestEndpointSlice(t *testing.T) {
	slice := func(svc string) []byte {
		return []byte(`{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"` + svc + `-x","namespace":"shop","resourceVersion":"7","labels":{"kubernetes.io/service-name":"` + svc + `"}},"addressType":"IPv4",` +
			`"endpoints":[{"addresses":["198.19.0.1"],"nodeName":"a-1"},{"addresses":["198.19.1.1"],"nodeName":"b-1"},{"addresses":["198.19.2.1"],"nodeName":"a-2"},{"addresses":["198.19.3.1"]}],"ports":[{"port":80}]}`)
	}
	cases := []struct {
		name, svc string
		want      []string
		same      bool
	}{
		{"filtered Service keeps its unit's endpoints", "web", []string{"a-1", "a-2"}, false},
		{"a Service without topology keys passes untouched", "other", []string{"a-1", "b-1", "a-2"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := slice(tc.svc)
			out, err := EndpointSlice(in, rules)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, nodesOf(t, out, "endpoints")); diff != "" {
				t.Errorf("endpoints' nodes (-want +got):\n%s", diff)
			}
			if tc.same != (string(in) == string(out)) {
				t.Errorf("unchanged=%v, want %v", string(in) == string(out), tc.same)
			}
			var meta struct {
				Metadata struct{ ResourceVersion string } `json:"metadata"`
				Ports    []any                            `json:"ports"`
			}
			if err := json.Unmarshal(out, &meta); err != nil || meta.Metadata.ResourceVersion != "7" || len(meta.Ports) != 1 {
				t.Errorf("the rest of the object changed: %s (%v)", out, err)
			}
		})
	}
	empty := []byte(`{"metadata":{"name":"web-y","namespace":"shop","labels":{"kubernetes.io/service-name":"web"}},"endpoints":null}`)
	out, err := EndpointSlice(empty, rules)
	if err != nil || nodesOf(t, out, "endpoints") != nil {
		t.Errorf("a slice without endpoints: %s, %v", out, err)
	}
	if _, err := EndpointSlice([]byte(`{"metadata":`), rules); err == nil {
		t.Error("malformed JSON was accepted")
	}
}

func TestEndpoints(t *testing.T) {
	in := []byte(`{"kind":"Endpoints","metadata":{"name":"web","namespace":"shop"},"subsets":[` +
		`{"addresses":[{"ip":"198.19.0.1","nodeName":"a-1"},{"ip":"198.19.1.1","nodeName":"b-1"}],"notReadyAddresses":[{"ip":"198.19.2.1","nodeName":"b-2"}],"ports":[{"port":80}]},` +
		`{"addresses":[{"ip":"198.19.4.1","nodeName":"b-3"}],"ports":[{"port":81}]}]}`)
	out, err := Endpoints(in, rules)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a-1"}, nodesOf(t, out, "subsets", "addresses")); diff != "" {
		t.Errorf("ready addresses (-want +got):\n%s", diff)
	}
	var obj struct {
		Subsets []map[string]json.RawMessage `json:"subsets"`
	}
	if err := json.Unmarshal(out, &obj); err != nil {
		t.Fatal(err)
	}
	if len(obj.Subsets) != 1 || obj.Subsets[0]["notReadyAddresses"] != nil {
		t.Errorf("subsets without local addresses are dropped, and empty address lists: %s", out)
	}
	other := []byte(`{"metadata":{"name":"other","namespace":"shop"},"subsets":[{"addresses":[{"ip":"1.2.3.4","nodeName":"b-1"}]}]}`)
	if out, err := Endpoints(other, rules); err != nil || string(out) != string(other) {
		t.Errorf("an unfiltered Service's Endpoints changed: %s, %v", out, err)
	}
}

func TestKeysOf(t *testing.T) {
	cases := []struct {
		name        string
		annotations map[string]string
		want        []string
		wantErr     bool
	}{
		{"none", nil, nil, false},
		{"SuperEdge JSON array", map[string]string{AnnotationSuperEdge: `["lab"]`}, []string{"lab"}, false},
		{"OpenYurt list", map[string]string{AnnotationOpenYurt: "kubernetes.io/hostname, openyurt.io/nodepool"}, []string{"kubernetes.io/hostname", "openyurt.io/nodepool"}, false},
		{"SuperEdge wins", map[string]string{AnnotationSuperEdge: `["a"]`, AnnotationOpenYurt: "b"}, []string{"a"}, false},
		{"malformed", map[string]string{AnnotationSuperEdge: `lab`}, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := KeysOf(tc.annotations)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFilterFor(t *testing.T) {
	f := &Filter{Rules: rules, Components: DefaultComponents}
	cases := []struct {
		name, ua, path string
		want           bool
	}{
		{"kube-proxy lists slices", "kube-proxy/v1.37.1 (linux/amd64) kubernetes/abc", "/apis/discovery.k8s.io/v1/endpointslices", true},
		{"CoreDNS watches a namespace's slices", "coredns/1.12.0", "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices", true},
		{"kube-proxy reads Endpoints", "kube-proxy/v1.37.1", "/api/v1/endpoints", true},
		{"kubectl sees everything", "kubectl/v1.37.1", "/apis/discovery.k8s.io/v1/endpointslices", false},
		{"kube-proxy's other reads pass", "kube-proxy/v1.37.1", "/api/v1/services", false},
		{"one slice by name passes", "kube-proxy/v1.37.1", "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices/web-x", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.path, nil)
			r.Header.Set("User-Agent", tc.ua)
			if got := f.For(r) != nil; got != tc.want {
				t.Errorf("filtered=%v, want %v", got, tc.want)
			}
		})
	}
	var off *Filter
	if off.For(httptest.NewRequest("GET", "/api/v1/endpoints", nil)) != nil {
		t.Error("a nil filter filters")
	}
}

func TestKubernetesEndpoint(t *testing.T) {
	hub := netip.MustParseAddrPort("169.254.2.1:10268")
	f := &Filter{Rules: rules, Components: DefaultComponents, KubernetesEndpoint: hub}
	read := func(path string, raw string) string {
		t.Helper()
		r := httptest.NewRequest("GET", path, nil)
		r.Header.Set("User-Agent", "kube-proxy/v1.37.1")
		out, err := f.For(r).Apply([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	slice := read("/apis/discovery.k8s.io/v1/endpointslices", `{"kind":"EndpointSlice","metadata":{"name":"kubernetes","namespace":"default","labels":{"kubernetes.io/service-name":"kubernetes"}},"addressType":"IPv4","endpoints":[{"addresses":["198.18.0.1"],"conditions":{"ready":true}}],"ports":[{"name":"https","port":6443,"protocol":"TCP"}]}`)
	want := `{"kind":"EndpointSlice","metadata":{"name":"kubernetes","namespace":"default","labels":{"kubernetes.io/service-name":"kubernetes"}},"addressType":"IPv4","endpoints":[{"addresses":["169.254.2.1"],"conditions":{"ready":true}}],"ports":[{"name":"https","port":10268,"protocol":"TCP"}]}`
	if diff := cmp.Diff(want, slice); diff != "" {
		t.Errorf("kubernetes EndpointSlice (-want +got):\n%s", diff)
	}
	endpoints := read("/api/v1/endpoints", `{"kind":"Endpoints","metadata":{"name":"kubernetes","namespace":"default"}}`)
	want = `{"kind":"Endpoints","metadata":{"name":"kubernetes","namespace":"default"},"subsets":[{"addresses":[{"ip":"169.254.2.1"}],"ports":[{"name":"https","port":10268,"protocol":"TCP"}]}]}`
	if diff := cmp.Diff(want, endpoints); diff != "" {
		t.Errorf("kubernetes Endpoints (-want +got):\n%s", diff)
	}
	other := `{"metadata":{"name":"kubernetes","namespace":"shop","labels":{"kubernetes.io/service-name":"kubernetes"}},"endpoints":[{"addresses":["1.2.3.4"],"nodeName":"b-1"}]}`
	if got := read("/apis/discovery.k8s.io/v1/endpointslices", other); got != other {
		t.Errorf("a Service named kubernetes in another namespace was rewritten: %s", got)
	}
}
