package cache

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestKeyForRequest(t *testing.T) {
	cases := []struct {
		name, method, url string
		want              Key
		wantErr           error
	}{
		{"get a pod", "GET", "/api/v1/namespaces/kube-system/pods/coredns-1",
			Key{Identity: "kubelet", Verb: VerbGet, Version: "v1", Resource: "pods", Namespace: "kube-system", Name: "coredns-1"}, nil},
		{"list endpointslices with a label selector", "GET", "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=kubernetes.io/service-name%3Dweb,app%3Dx",
			Key{Identity: "kubelet", Verb: VerbList, Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices", LabelSelector: "app=x,kubernetes.io/service-name=web"}, nil},
		{"watch is the list's key", "GET", "/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dedge-1&resourceVersion=5",
			Key{Identity: "kubelet", Verb: VerbList, Version: "v1", Resource: "pods", FieldSelector: "spec.nodeName=edge-1"}, nil},
		{"node status subresource", "GET", "/api/v1/nodes/edge-1/status",
			Key{Identity: "kubelet", Verb: VerbGet, Version: "v1", Resource: "nodes", Subresource: "status", Name: "edge-1"}, nil},
		{"logs stream through", "GET", "/api/v1/namespaces/default/pods/app/log?follow=true", Key{}, ErrNotCacheable},
		{"exec streams through", "GET", "/api/v1/namespaces/default/pods/app/exec?command=sh", Key{}, ErrNotCacheable},
		{"a write is not cacheable", "POST", "/api/v1/namespaces/default/pods", Key{}, ErrNotCacheable},
		{"a non-resource path is not cacheable", "GET", "/healthz", Key{}, ErrNotCacheable},
		{"group discovery", "GET", "/apis/discovery.k8s.io/v1",
			Key{Identity: "kubelet", Verb: VerbDiscovery, Resource: "/apis/discovery.k8s.io/v1"}, nil},
		{"core discovery", "GET", "/api", Key{Identity: "kubelet", Verb: VerbDiscovery, Resource: "/api"}, nil},
		{"version", "GET", "/version", Key{Identity: "kubelet", Verb: VerbDiscovery, Resource: "/version"}, nil},
		{"openapi is not cacheable", "GET", "/openapi/v3", Key{}, ErrNotCacheable},
		{"discovery is read-only", "POST", "/apis", Key{}, ErrNotCacheable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := KeyForRequest("kubelet", httptest.NewRequest(tc.method, tc.url, nil))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("key (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := KeyForRequest("x", httptest.NewRequest("GET", "/api/v1/pods?labelSelector=a%20in%20(", nil)); err == nil {
		t.Error("a malformed selector was accepted")
	}
}

// TestKeysNeverCollide: keys that differ in any field have different bytes,
// even when field contents would run together.
func TestKeysNeverCollide(t *testing.T) {
	keys := []Key{
		{Identity: "a", Verb: VerbList, Resource: "pods"},
		{Identity: "b", Verb: VerbList, Resource: "pods"},
		{Identity: "a", Verb: VerbGet, Resource: "pods"},
		{Identity: "a", Verb: VerbList, Resource: "pods", Namespace: "ns"},
		{Identity: "a", Verb: VerbList, Resource: "pods", Namespace: "n", Name: "s"},
		{Identity: "a", Verb: VerbList, Resource: "pods", LabelSelector: "x=y"},
		{Identity: "a", Verb: VerbList, Resource: "pods", FieldSelector: "x=y"},
		{Identity: "a\x00", Verb: VerbList, Resource: "pods"},
		{Identity: "a", Verb: VerbList, Group: "pods", Resource: ""},
	}
	seen := map[string]Key{}
	for _, k := range keys {
		if other, ok := seen[string(k.Bytes())]; ok {
			t.Errorf("%v and %v share an encoding", k, other)
		}
		seen[string(k.Bytes())] = k
	}
}

// FuzzKeyForRequest: any request either fails cleanly or yields a key whose
// encoding decodes to the same key (so distinct keys never collide).
func FuzzKeyForRequest(f *testing.F) {
	for _, seed := range []string{
		"/api/v1/namespaces/default/pods/x",
		"/apis/discovery.k8s.io/v1/endpointslices?watch=1&labelSelector=a%3Db",
		"/api/v1/nodes/n/status",
		"/apis/apps/v1/namespaces/a/deployments?fieldSelector=metadata.name%3Dx",
		"/api/v1/pods?labelSelector=a%20notin%20(b,c),!d",
	} {
		f.Add("system:node:edge-1", seed)
	}
	f.Fuzz(func(t *testing.T, identity, target string) {
		if len(target) == 0 || target[0] != '/' {
			target = "/" + target
		}
		req, err := newRequest(target)
		if err != nil {
			return
		}
		k, err := KeyForRequest(identity, req)
		if err != nil {
			return
		}
		back, err := ParseKey(k.Bytes())
		if err != nil {
			t.Fatalf("key %v does not decode: %v", k, err)
		}
		if back != k {
			t.Fatalf("round trip changed the key: %v -> %v", k, back)
		}
	})
}

func newRequest(target string) (req *http.Request, err error) {
	defer func() {
		if recover() != nil {
			err = errors.New("httptest refused the target")
		}
	}()
	return httptest.NewRequest("GET", target, nil), nil
}
