package proxy

import (
	"encoding/json"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/kubeproto"
)

// The hub keeps an answer in the encoding the cloud sent it in, JSON or
// protobuf, and serves it back so: a protobuf client (the kubelet's
// informers, kube-proxy, CoreDNS, any client-go clientset configured for
// it) decodes what it asked for, online and offline, and the hub never
// decodes and re-encodes a list on its way.

// acceptedEncodings lists the encodings of a client's Accept header the hub
// can keep and serve, in the client's order of preference. A media type with
// parameters other than a watch's stream=watch (as=Table,
// as=PartialObjectMetadata, ...) asks the apiserver for another shape of
// object: none is returned, and the caller decides.
func acceptedEncodings(accept string) ([]string, bool) {
	if strings.TrimSpace(accept) == "" {
		return []string{cache.EncodingJSON}, true
	}
	var out []string
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			return nil, false
		}
		delete(params, "stream")
		delete(params, "q")
		if len(params) > 0 {
			return nil, false
		}
		var enc string
		switch mt {
		case kubeproto.MediaType:
			enc = cache.EncodingProtobuf
		case "application/json", "application/*", "*/*":
			enc = cache.EncodingJSON
		default:
			continue
		}
		if !slices.Contains(out, enc) {
			out = append(out, enc)
		}
	}
	return out, true
}

// encodingOf is the encoding of an answer the hub can keep; false for any
// other (CBOR, a Table's JSON is JSON).
func encodingOf(resp *http.Response) (string, bool) {
	ct := resp.Header.Get("Content-Type")
	if kubeproto.IsProtobuf(ct) {
		return cache.EncodingProtobuf, true
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return cache.EncodingJSON, mt == "application/json"
}

// contentType is the Content-Type of an answer in encoding; a watch's
// protobuf stream says so.
func contentType(encoding string, watch bool) string {
	switch {
	case encoding != cache.EncodingProtobuf:
		return "application/json"
	case watch:
		return kubeproto.MediaType + ";stream=watch"
	}
	return kubeproto.MediaType
}

// kept is an object of an answer as the hub keeps it: without
// managedFields, with the metadata the hub reads.
type kept struct {
	item cache.Item
	meta objectMeta
	// typ is the object's apiVersion and kind.
	typ kubeproto.TypeMeta
}

// keep reads an object of an answer in encoding: for JSON the object, for
// protobuf its envelope (kept.item.Raw is then the object's message). A
// JSON object's type is read only withType (a protobuf envelope has it
// anyway).
func keep(encoding string, obj []byte, withType bool) (kept, error) {
	if encoding == cache.EncodingProtobuf {
		tm, raw, err := kubeproto.Unwrap(obj)
		if err != nil {
			return kept{}, err
		}
		raw, m, err := kubeproto.Strip(raw)
		if err != nil {
			return kept{}, err
		}
		return kept{item: cache.Item{Namespace: m.Namespace, Name: m.Name, Raw: raw},
			meta: objectMeta{Namespace: m.Namespace, Name: m.Name, ResourceVersion: m.ResourceVersion, Annotations: m.Annotations}, typ: tm}, nil
	}
	it, m, err := itemOf(obj)
	if err != nil || !withType {
		return kept{item: it, meta: m}, err
	}
	var tm struct {
		Kind       string `json:"kind"`
		APIVersion string `json:"apiVersion"`
	}
	_ = json.Unmarshal(obj, &tm)
	return kept{item: it, meta: m, typ: kubeproto.TypeMeta{APIVersion: tm.APIVersion, Kind: tm.Kind}}, nil
}
