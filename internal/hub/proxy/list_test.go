package proxy

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestItemOfDropsManagedFields: what the cache keeps of an object is the
// object without metadata.managedFields, everything else as it was.
func TestItemOfDropsManagedFields(t *testing.T) {
	in := []byte(`{"kind":"Pod","metadata":{"name":"app","namespace":"shop","resourceVersion":"7","labels":{"a":"b"},` +
		`"managedFields":[{"manager":"kubectl","operation":"Apply","fieldsV1":{"f:spec":{}}}]},"spec":{"nodeName":"a-1"}}`)
	it, meta, err := itemOf(in)
	if err != nil {
		t.Fatal(err)
	}
	if it.Namespace != "shop" || it.Name != "app" || meta.ResourceVersion != "7" {
		t.Errorf("item %s/%s at %q", it.Namespace, it.Name, meta.ResourceVersion)
	}
	var got, want map[string]any
	if err := json.Unmarshal(it.Raw, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(`{"kind":"Pod","metadata":{"name":"app","namespace":"shop","resourceVersion":"7","labels":{"a":"b"}},"spec":{"nodeName":"a-1"}}`), &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cached object (-want +got):\n%s", diff)
	}
	plain := []byte(`{"kind":"Pod","metadata":{"name":"app"}}`)
	if it, _, err := itemOf(plain); err != nil || string(it.Raw) != string(plain) {
		t.Errorf("an object without managedFields changed: %s, %v", it.Raw, err)
	}
}
