package kubeproto

import (
	"bytes"
	"errors"
	"io"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
)

// The real serializers of k8s.io/apimachinery encode and decode what this
// package reads and writes.
var (
	pb      = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	codec   = scheme.Codecs.CodecForVersions(pb, pb, corev1.SchemeGroupVersion, corev1.SchemeGroupVersion)
	decoder = scheme.Codecs.UniversalDeserializer()
)

func pod(name string, managed bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", ResourceVersion: "7",
		Labels: map[string]string{"app": "a"}, Annotations: map[string]string{"a": "1", "b": "2"}},
		Spec: corev1.PodSpec{NodeName: "edge-1", Containers: []corev1.Container{{Name: "c", Image: "img"}}}}
	if managed {
		p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply, APIVersion: "v1",
			FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:spec":{}}`)}}
	}
	return p
}

func encode(t *testing.T, obj runtime.Object) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := codec.Encode(obj, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestStripKeepsAllButManagedFields(t *testing.T) {
	doc := encode(t, pod("app", true))
	tm, raw, err := Unwrap(doc)
	if err != nil || tm != (TypeMeta{APIVersion: "v1", Kind: "Pod"}) {
		t.Fatalf("Unwrap: %+v, %v", tm, err)
	}
	stripped, m, err := Strip(raw)
	if err != nil {
		t.Fatal(err)
	}
	if m.Namespace != "ns" || m.Name != "app" || m.ResourceVersion != "7" || m.Annotations["b"] != "2" || len(m.Annotations) != 2 {
		t.Errorf("meta %+v", m)
	}
	got, _, err := decoder.Decode(Wrap(tm, stripped), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := pod("app", false)
	want.APIVersion, want.Kind = "v1", "Pod"
	if !apiequality.Semantic.DeepEqual(got, want) {
		t.Errorf("stripped pod:\n%+v\nwant\n%+v", got, want)
	}
	// Without managedFields, the object is returned as it came.
	_, raw, _ = Unwrap(encode(t, pod("app", false)))
	if again, _, _ := Strip(raw); !bytes.Equal(again, raw) {
		t.Error("an object without managedFields changed")
	}
}

func TestListRoundTrip(t *testing.T) {
	list := &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "42"}}
	for _, n := range []string{"a", "b", "c"} {
		list.Items = append(list.Items, *pod(n, true))
	}
	doc := encode(t, list)
	var items [][]byte
	var tm TypeMeta
	var rv string
	err := ReadList(bytes.NewReader(doc), func(t TypeMeta, v string) error { tm, rv = t, v; return nil },
		func(raw []byte) error { items = append(items, raw); return nil })
	if err != nil || tm.Kind != "PodList" || tm.APIVersion != "v1" || rv != "42" || len(items) != 3 {
		t.Fatalf("ReadList: %+v %q %d items, %v", tm, rv, len(items), err)
	}
	// Written back from the stripped items, it decodes as the list without
	// managedFields.
	var itemBytes, lengthBytes int64
	for i, raw := range items {
		items[i], _, _ = Strip(raw)
		itemBytes += int64(len(items[i]))
		lengthBytes += int64(len(AppendItem(nil, items[i])) - 1 - len(items[i]))
	}
	out, total := ListHeader(tm, rv, len(items), itemBytes, lengthBytes)
	for _, raw := range items {
		out = AppendItem(out, raw)
	}
	if total != int64(len(out)) {
		t.Errorf("ListHeader's total %d, the list is %d bytes", total, len(out))
	}
	got, _, err := decoder.Decode(out, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		list.Items[i].ManagedFields = nil
	}
	list.APIVersion, list.Kind = "v1", "PodList"
	if !apiequality.Semantic.DeepEqual(got, list) {
		t.Errorf("list written back:\n%+v\nwant\n%+v", got, list)
	}
	// Cut anywhere before its end, a list is an error, never a shorter
	// list. (The envelope ends with its empty contentEncoding and
	// contentType, 4 bytes after the list.)
	if !bytes.HasSuffix(doc, []byte{0x1a, 0, 0x22, 0}) {
		t.Fatalf("envelope ends % x", doc[len(doc)-4:])
	}
	for n := 0; n < len(doc)-4; n++ {
		count := 0
		err := ReadList(bytes.NewReader(doc[:n]), func(TypeMeta, string) error { return nil }, func([]byte) error { count++; return nil })
		if err == nil {
			t.Fatalf("a list cut at %d of %d bytes read without error (%d items)", n, len(doc), count)
		}
	}
}

func TestWatchEvents(t *testing.T) {
	var buf bytes.Buffer
	enc := streaming.NewEncoder(protobuf.LengthDelimitedFramer.NewFrameWriter(&buf), protobuf.NewRawSerializer(scheme.Scheme, scheme.Scheme))
	for _, typ := range []watch.EventType{watch.Added, watch.Modified, watch.Bookmark} {
		ev := &metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: encode(t, pod("app", false))}}
		if err := enc.Encode(ev); err != nil {
			t.Fatal(err)
		}
	}
	r := bytes.NewReader(buf.Bytes())
	for _, want := range []string{"ADDED", "MODIFIED", "BOOKMARK"} {
		typ, obj, err := ReadEvent(r)
		if err != nil || typ != want {
			t.Fatalf("ReadEvent: %q, %v; want %s", typ, err, want)
		}
		if _, raw, err := Unwrap(obj); err != nil {
			t.Fatal(err)
		} else if _, m, _ := Strip(raw); m.Name != "app" {
			t.Errorf("event object %+v", m)
		}
	}
	if _, _, err := ReadEvent(r); !errors.Is(err, io.EOF) {
		t.Errorf("after the last event: %v, want EOF", err)
	}

	// What AppendEvent writes, the real watch decoder reads: a bookmark
	// made of a stub.
	stub := Wrap(TypeMeta{APIVersion: "v1", Kind: "Pod"}, Stub("99", map[string]string{"k8s.io/initial-events-end": "true"}))
	frames := AppendEvent(nil, "BOOKMARK", stub)
	dec := streaming.NewDecoder(protobuf.LengthDelimitedFramer.NewFrameReader(io.NopCloser(bytes.NewReader(frames))), protobuf.NewRawSerializer(scheme.Scheme, scheme.Scheme))
	var ev metav1.WatchEvent
	if _, _, err := dec.Decode(nil, &ev); err != nil {
		t.Fatal(err)
	}
	obj, _, err := decoder.Decode(ev.Object.Raw, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := obj.(*corev1.Pod)
	if ev.Type != "BOOKMARK" || p.ResourceVersion != "99" || p.Annotations["k8s.io/initial-events-end"] != "true" {
		t.Errorf("bookmark read back: %s %+v", ev.Type, p.ObjectMeta)
	}
}
