// Package topology is the edge hub's service topology filter: what the
// node's kube-proxy and CoreDNS see of a Service's endpoints is cut down to
// the endpoints on nodes that share the local node's value of the Service's
// topology keys (its own unit, for a ServiceGrid). Users still see every
// endpoint; only the node's routing is confined.
package topology

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
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

// sliceService names an EndpointSlice's Service. It reads only up to the
// object's metadata, which the apiserver writes before the endpoints.
func sliceService(raw []byte) (string, string, error) {
	var meta struct {
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	}
	if err := decodeField(raw, "metadata", &meta); err != nil {
		return "", "", err
	}
	return meta.Namespace, meta.Labels[serviceNameLabel], nil
}

// decodeField decodes one field of a JSON object into v, reading no further
// than that field.
func decodeField(raw []byte, field string, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("not a JSON object: %v", err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if tok == field {
			return dec.Decode(v)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}

// endpointsService names an Endpoints object's Service: its own name.
func endpointsService(raw []byte) (string, string, error) {
	var meta struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	}
	err := decodeField(raw, "metadata", &meta)
	return meta.Namespace, meta.Name, err
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
	return rewriteField(raw, "endpoints", func(list json.RawMessage) (json.RawMessage, error) {
		return keepEndpoints(list, ns, svc, rules)
	})
}

// rewriteField copies a JSON object, field order and bytes unchanged,
// except for the value of field, which fn replaces (fn(nil) is appended
// when the object lacks the field).
func rewriteField(raw []byte, field string, fn func(json.RawMessage) (json.RawMessage, error)) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	out := bytes.NewBuffer(make([]byte, 0, len(raw)))
	out.WriteByte('{')
	seen, first := false, true
	write := func(key string, v []byte) {
		if !first {
			out.WriteByte(',')
		}
		first = false
		name, _ := json.Marshal(key)
		out.Write(name)
		out.WriteByte(':')
		out.Write(v)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if key == field {
			seen = true
			if v, err = fn(v); err != nil {
				return nil, err
			}
		}
		write(key, v)
	}
	if !seen {
		v, err := fn(nil)
		if err != nil {
			return nil, err
		}
		write(field, v)
	}
	out.WriteByte('}')
	return out.Bytes(), nil
}

// keepEndpoints filters a JSON array of objects with a nodeName.
func keepEndpoints(list json.RawMessage, ns, svc string, rules Rules) (json.RawMessage, error) {
	if len(list) == 0 || string(list) == "null" {
		return json.RawMessage("[]"), nil
	}
	dec := json.NewDecoder(bytes.NewReader(list))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, fmt.Errorf("endpoints are not a JSON array: %v", err)
	}
	var out bytes.Buffer
	out.Grow(len(list))
	out.WriteByte('[')
	n := 0
	for dec.More() {
		var it json.RawMessage
		if err := dec.Decode(&it); err != nil {
			return nil, err
		}
		var ep struct {
			NodeName string `json:"nodeName"`
		}
		if err := json.Unmarshal(it, &ep); err != nil {
			return nil, err
		}
		if ep.NodeName != "" && rules.Keep(ns, svc, ep.NodeName) {
			if n > 0 {
				out.WriteByte(',')
			}
			out.Write(it)
			n++
		}
	}
	out.WriteByte(']')
	return out.Bytes(), nil
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

// kubernetesSlice points the default/kubernetes EndpointSlice at addr.
func kubernetesSlice(raw []byte, addr netip.AddrPort) ([]byte, error) {
	endpoints, _ := json.Marshal([]map[string]any{{"addresses": []string{addr.Addr().String()}, "conditions": map[string]bool{"ready": true}}})
	ports, _ := json.Marshal([]map[string]any{{"name": "https", "protocol": "TCP", "port": addr.Port()}})
	return rewriteFields(raw, map[string]json.RawMessage{"endpoints": endpoints, "ports": ports})
}

// kubernetesEndpoints points the default/kubernetes Endpoints at addr.
func kubernetesEndpoints(raw []byte, addr netip.AddrPort) ([]byte, error) {
	subsets, _ := json.Marshal([]map[string]any{{
		"addresses": []map[string]string{{"ip": addr.Addr().String()}},
		"ports":     []map[string]any{{"name": "https", "protocol": "TCP", "port": addr.Port()}},
	}})
	return rewriteFields(raw, map[string]json.RawMessage{"subsets": subsets})
}

// rewriteFields replaces the values of the named fields.
func rewriteFields(raw []byte, values map[string]json.RawMessage) ([]byte, error) {
	out := raw
	for field, v := range values {
		var err error
		if out, err = rewriteField(out, field, func(json.RawMessage) (json.RawMessage, error) { return v, nil }); err != nil {
			return nil, err
		}
	}
	return out, nil
}
