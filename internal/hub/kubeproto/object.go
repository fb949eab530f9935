// Package kubeproto reads and writes the Kubernetes API's protobuf encoding
// without the API's types: the envelope every object travels in, the
// metadata fields the hub needs of an object, lists, and watch streams. The
// hub keeps protobuf answers as the apiserver sent them and serves them back
// the same way; linking the generated types of every resource (core/v1 and
// the rest) for that would undo its memory budget (docs/hub.md, Memory).
//
// Field numbers are those of k8s.io/apimachinery's generated.proto:
// runtime.Unknown (typeMeta 1, raw 2), runtime.TypeMeta (apiVersion 1, kind
// 2), ObjectMeta (name 1, namespace 3, resourceVersion 6, annotations 12,
// managedFields 17) as field 1 of every object, ListMeta (resourceVersion
// 2) as field 1 and the items as field 2 of every list, WatchEvent (type 1,
// object 2) and RawExtension (raw 1).
package kubeproto

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"mime"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// MediaType is the content type of the protobuf encoding; a watch stream's
// has the parameter stream=watch.
const MediaType = "application/vnd.kubernetes.protobuf"

// magic starts every protobuf-encoded object ("k8s\x00").
var magic = []byte{0x6b, 0x38, 0x73, 0x00}

// IsProtobuf reports whether a Content-Type header names the protobuf
// encoding (of an object, a list or a watch stream).
func IsProtobuf(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == MediaType
}

// TypeMeta is an envelope's apiVersion and kind.
type TypeMeta struct{ APIVersion, Kind string }

// Meta is what the hub reads of an object's metadata.
type Meta struct {
	Namespace, Name, ResourceVersion string
	Annotations                      map[string]string
}

// Field numbers.
const (
	unknownTypeMeta protowire.Number = 1
	unknownRaw      protowire.Number = 2

	typeMetaAPIVersion protowire.Number = 1
	typeMetaKind       protowire.Number = 2

	objectMetadata protowire.Number = 1
	listItems      protowire.Number = 2

	metaName            protowire.Number = 1
	metaNamespace       protowire.Number = 3
	metaResourceVersion protowire.Number = 6
	metaAnnotations     protowire.Number = 12
	metaManagedFields   protowire.Number = 17

	listMetaResourceVersion protowire.Number = 2

	mapKey   protowire.Number = 1
	mapValue protowire.Number = 2
)

// field is one field of a message: its number, wire type, value bytes (of
// a length-delimited field: the content) and the whole field as encoded.
type field struct {
	num   protowire.Number
	typ   protowire.Type
	value []byte
	whole []byte
}

// eachField calls fn for every field of msg, in order.
func eachField(msg []byte, fn func(field) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		f := field{num: num, typ: typ, value: msg[n : n+m], whole: msg[:n+m]}
		if typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(msg[n:])
			f.value = v
		}
		if err := fn(f); err != nil {
			return err
		}
		msg = msg[n+m:]
	}
	return nil
}

// Unwrap opens an encoded object (magic, then runtime.Unknown): its type and
// the object's own message.
func Unwrap(doc []byte) (TypeMeta, []byte, error) {
	var tm TypeMeta
	if !bytes.HasPrefix(doc, magic) {
		return tm, nil, errors.New("protobuf object: no k8s magic prefix")
	}
	var raw []byte
	err := eachField(doc[len(magic):], func(f field) error {
		if f.typ != protowire.BytesType {
			return nil
		}
		switch f.num {
		case unknownTypeMeta:
			var err error
			tm, err = typeMetaOf(f.value)
			return err
		case unknownRaw:
			raw = f.value
		}
		return nil
	})
	if err != nil {
		return tm, nil, fmt.Errorf("protobuf object: %w", err)
	}
	return tm, raw, nil
}

func typeMetaOf(msg []byte) (TypeMeta, error) {
	var tm TypeMeta
	err := eachField(msg, func(f field) error {
		switch {
		case f.typ != protowire.BytesType:
		case f.num == typeMetaAPIVersion:
			tm.APIVersion = string(f.value)
		case f.num == typeMetaKind:
			tm.Kind = string(f.value)
		}
		return nil
	})
	return tm, err
}

// Wrap encodes an object's message in its envelope, as the apiserver does.
func Wrap(tm TypeMeta, raw []byte) []byte {
	out := append([]byte(nil), magic...)
	out = appendTypeMeta(out, tm)
	out = protowire.AppendTag(out, unknownRaw, protowire.BytesType)
	out = protowire.AppendBytes(out, raw)
	return out
}

func appendTypeMeta(out []byte, tm TypeMeta) []byte {
	var b []byte
	b = protowire.AppendTag(b, typeMetaAPIVersion, protowire.BytesType)
	b = protowire.AppendString(b, tm.APIVersion)
	b = protowire.AppendTag(b, typeMetaKind, protowire.BytesType)
	b = protowire.AppendString(b, tm.Kind)
	out = protowire.AppendTag(out, unknownTypeMeta, protowire.BytesType)
	return protowire.AppendBytes(out, b)
}

// Strip reads an object's metadata and returns the object without
// metadata.managedFields (every other byte as it was).
func Strip(raw []byte) ([]byte, Meta, error) {
	var m Meta
	var out []byte
	stripped := false
	err := eachField(raw, func(f field) error {
		if f.num != objectMetadata || f.typ != protowire.BytesType {
			out = append(out, f.whole...)
			return nil
		}
		var md []byte
		err := eachField(f.value, func(g field) error {
			if g.typ == protowire.BytesType {
				switch g.num {
				case metaName:
					m.Name = string(g.value)
				case metaNamespace:
					m.Namespace = string(g.value)
				case metaResourceVersion:
					m.ResourceVersion = string(g.value)
				case metaAnnotations:
					k, v, err := mapEntry(g.value)
					if err != nil {
						return err
					}
					if m.Annotations == nil {
						m.Annotations = map[string]string{}
					}
					m.Annotations[k] = v
				case metaManagedFields:
					stripped = true
					return nil
				}
			}
			md = append(md, g.whole...)
			return nil
		})
		if err != nil {
			return err
		}
		if !stripped {
			out = append(out, f.whole...)
			return nil
		}
		out = protowire.AppendTag(out, objectMetadata, protowire.BytesType)
		out = protowire.AppendBytes(out, md)
		return nil
	})
	if err != nil {
		return nil, m, fmt.Errorf("protobuf object: %w", err)
	}
	if !stripped {
		return raw, m, nil
	}
	return out, m, nil
}

func mapEntry(b []byte) (string, string, error) {
	var k, v string
	err := eachField(b, func(f field) error {
		switch {
		case f.typ != protowire.BytesType:
		case f.num == mapKey:
			k = string(f.value)
		case f.num == mapValue:
			v = string(f.value)
		}
		return nil
	})
	return k, v, err
}

// Stub is the message of an object that has nothing but a resource version
// and annotations: what a watch's BOOKMARK carries.
func Stub(resourceVersion string, annotations map[string]string) []byte {
	var md []byte
	md = protowire.AppendTag(md, metaResourceVersion, protowire.BytesType)
	md = protowire.AppendString(md, resourceVersion)
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		var e []byte
		e = protowire.AppendTag(e, mapKey, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, mapValue, protowire.BytesType)
		e = protowire.AppendString(e, annotations[k])
		md = protowire.AppendTag(md, metaAnnotations, protowire.BytesType)
		md = protowire.AppendBytes(md, e)
	}
	out := protowire.AppendTag(nil, objectMetadata, protowire.BytesType)
	return protowire.AppendBytes(out, md)
}
