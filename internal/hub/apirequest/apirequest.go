// Package apirequest parses a Kubernetes API request's path and query as
// kube-apiserver does, for the hub's proxy to classify each request once:
// its cache key, its topology filter and the writes it answers offline all
// read the same RequestInfo.
package apirequest

import (
	"net/http"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/endpoints/request"
)

// Info is a request as the apiserver reads it: verb, group, version,
// resource, subresource, namespace, name and selectors.
type Info = request.RequestInfo

// factory parses paths as kube-apiserver does. (Its fields have the
// deprecated sets.String type; plain map literals fill them.)
var factory = &request.RequestInfoFactory{
	APIPrefixes:          map[string]sets.Empty{"api": {}, "apis": {}},
	GrouplessAPIPrefixes: map[string]sets.Empty{"api": {}},
}

// Parse reads r's path and query. An error is a request the apiserver
// would refuse (a malformed list option).
func Parse(r *http.Request) (*Info, error) {
	return factory.NewRequestInfo(r)
}
