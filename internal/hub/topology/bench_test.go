package topology

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkEndpointSlice is the filter's cost per watch event: one
// EndpointSlice of 100 endpoints spread over 10 nodes, of which the local
// unit holds 2, as kube-proxy receives it.
func BenchmarkEndpointSlice(b *testing.B) {
	var eps []string
	for i := 0; i < 100; i++ {
		eps = append(eps, fmt.Sprintf(`{"addresses":["198.19.%d.%d"],"conditions":{"ready":true,"serving":true,"terminating":false},"nodeName":"%s","targetRef":{"kind":"Pod","namespace":"shop","name":"web-%d","uid":"0b5c2a4e-7c1d-4f7e-9a43-%012d"}}`,
			i/250, i%250+1, []string{"a-1", "a-2", "b-1", "b-2", "c-1", "c-2", "d-1", "d-2", "e-1", "e-2"}[i%10], i, i))
	}
	raw := []byte(`{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{"name":"web-abcde","generateName":"web-","namespace":"shop","uid":"3f6c","resourceVersion":"123456","labels":{"endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io","kubernetes.io/service-name":"web"}},"addressType":"IPv4","endpoints":[` +
		strings.Join(eps, ",") + `],"ports":[{"name":"http","protocol":"TCP","port":8080}]}`)
	for _, tc := range []struct {
		name  string
		rules Rules
	}{
		{"filtered Service", rules},
		{"unfiltered Service", unitRules{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := EndpointSlice(raw, tc.rules); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
