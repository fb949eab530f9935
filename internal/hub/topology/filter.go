// Package topology is the edge hub's service topology filter: what the
// node's kube-proxy and CoreDNS see of a Service's endpoints is cut down to
// the endpoints on nodes that share the local node's value of the Service's
// topology keys (its own unit, for a ServiceGrid). Users still see every
// endpoint; only the node's routing is confined.
package topology

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Annotations that name a Service's topology keys.
const (
	// AnnotationSuperEdge is SuperEdge's (and sitegrid's ServiceGrid's): a
	// JSON array of node label keys.
	AnnotationSuperEdge = "topologyKeys"
	// AnnotationOpenYurt is OpenYurt's: one key, or several separated by
	// commas.
	AnnotationOpenYurt = "openyurt.io/topologyKeys"
	// HostnameKey means node-local: endpoints on this node only.
	HostnameKey = "kubernetes.io/hostname"
	// serviceNameLabel names an EndpointSlice's Service.
	serviceNameLabel = "kubernetes.io/service-name"
)

// KeysOf reads a Service's topology keys from its annotations; none means
// the Service is not filtered. A malformed annotation is an error: the
// Service passes unfiltered and the caller reports it.
func KeysOf(annotations map[string]string) ([]string, error) {
	if v, ok := annotations[AnnotationSuperEdge]; ok && strings.TrimSpace(v) != "" {
		var keys []string
		if err := json.Unmarshal([]byte(v), &keys); err != nil {
			return nil, fmt.Errorf("annotation %s=%q is not a JSON array of label keys: %w", AnnotationSuperEdge, v, err)
		}
		return clean(keys), nil
	}
	if v, ok := annotations[AnnotationOpenYurt]; ok {
		return clean(strings.Split(v, ",")), nil
	}
	return nil, nil
}

func clean(keys []string) []string {
	out := keys[:0]
	for _, k := range keys {
		if k = strings.TrimSpace(k); k != "" {
			out = append(out, k)
		}
	}
	return out
}

// Rules decide which endpoints the local node keeps.
type Rules interface {
	// Keep reports whether an endpoint on node belongs in what the local
	// node sees of Service namespace/service.
	Keep(namespace, service, node string) bool
	// Filters reports whether the Service is filtered at all.
	Filters(namespace, service string) bool
}

// sliceService names an EndpointSlice's Service.
func sliceService(raw []byte) (string, string, error) {
	var head struct {
		Metadata struct {
			Namespace string            `json:"namespace"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	err := json.Unmarshal(raw, &head)
	return head.Metadata.Namespace, head.Metadata.Labels[serviceNameLabel], err
}

// endpointsService names an Endpoints object's Service: its own name.
func endpointsService(raw []byte) (string, string, error) {
	var head struct {
		Metadata struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		} `json:"metadata"`
	}
	err := json.Unmarshal(raw, &head)
	return head.Metadata.Namespace, head.Metadata.Name, err
}

// EndpointSlice filters the endpoints of a discovery.k8s.io/v1
// EndpointSlice in JSON. Objects of unfiltered Services come back unchanged
// (the same bytes).
func EndpointSlice(raw []byte, rules Rules) ([]byte, error) {
	ns, svc, err := sliceService(raw)
	if err != nil {
		return nil, err
	}
	if svc == "" || !rules.Filters(ns, svc) {
		return raw, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	kept, err := keepEndpoints(obj["endpoints"], ns, svc, rules)
	if err != nil {
		return nil, err
	}
	obj["endpoints"] = kept
	return json.Marshal(obj)
}

// keepEndpoints filters a JSON array of objects with a nodeName.
func keepEndpoints(list json.RawMessage, ns, svc string, rules Rules) (json.RawMessage, error) {
	if len(list) == 0 || string(list) == "null" {
		return json.RawMessage("[]"), nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(list, &items); err != nil {
		return nil, err
	}
	kept := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		var ep struct {
			NodeName string `json:"nodeName"`
		}
		if err := json.Unmarshal(it, &ep); err != nil {
			return nil, err
		}
		if ep.NodeName != "" && rules.Keep(ns, svc, ep.NodeName) {
			kept = append(kept, it)
		}
	}
	return json.Marshal(kept)
}

// Endpoints filters the addresses of a core/v1 Endpoints object in JSON;
// subsets left without addresses are dropped.
func Endpoints(raw []byte, rules Rules) ([]byte, error) {
	ns, svc, err := endpointsService(raw)
	if err != nil {
		return nil, err
	}
	if !rules.Filters(ns, svc) {
		return raw, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	var subsets []map[string]json.RawMessage
	if s, ok := obj["subsets"]; ok && string(s) != "null" {
		if err := json.Unmarshal(s, &subsets); err != nil {
			return nil, err
		}
	}
	kept := make([]map[string]json.RawMessage, 0, len(subsets))
	for _, sub := range subsets {
		nonEmpty := false
		for _, field := range []string{"addresses", "notReadyAddresses"} {
			if _, ok := sub[field]; !ok {
				continue
			}
			addrs, err := keepEndpoints(sub[field], ns, svc, rules)
			if err != nil {
				return nil, err
			}
			if string(addrs) == "[]" {
				delete(sub, field)
				continue
			}
			sub[field] = addrs
			nonEmpty = true
		}
		if nonEmpty {
			kept = append(kept, sub)
		}
	}
	if len(kept) == 0 {
		delete(obj, "subsets")
	} else {
		s, err := json.Marshal(kept)
		if err != nil {
			return nil, err
		}
		obj["subsets"] = s
	}
	return json.Marshal(obj)
}
