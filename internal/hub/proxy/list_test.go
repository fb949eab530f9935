package proxy

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

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

// TestMemoryReleaser: small lists release nothing; a run of large lists
// releases once, after the last.
func TestMemoryReleaser(t *testing.T) {
	var released atomic.Int32
	m := memoryReleaser{release: func() { released.Add(1) }, after: time.Second}
	m.releaseAfterLargeList(largeList - 1)
	for range 5 {
		m.releaseAfterLargeList(largeList)
		time.Sleep(20 * time.Millisecond)
	}
	if n := released.Load(); n != 0 {
		t.Fatalf("released %d times while lists kept coming", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for released.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // a second release would come by now
	if n := released.Load(); n != 1 {
		t.Errorf("released %d times after the lists, want 1", n)
	}
}
