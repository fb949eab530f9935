package cache

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"

	"github.com/sitegrid/sitegrid/internal/process"
)

// TestReleaseMapping: after a large list is written and read, the cache
// file's pages count in the process's resident memory; ReleaseMapping
// drops them, and the list still reads back whole.
func TestReleaseMapping(t *testing.T) {
	s, path := openTemp(t)
	k := podKey("system:node:edge-1")
	items := make([]Item, 2000)
	for i := range items {
		noise := make([]byte, 512) // incompressible, so the file is large
		_, _ = rand.Read(noise)
		items[i] = Item{Namespace: "default", Name: fmt.Sprintf("pod-%04d", i),
			Raw: fmt.Appendf(nil, `{"metadata":{"name":"pod-%04d"},"noise":%q}`, i, hex.EncodeToString(noise))}
	}
	if err := s.ReplaceList(k, ListMeta{ResourceVersion: "1", Kind: "PodList", APIVersion: "v1"}, items); err != nil {
		t.Fatal(err)
	}
	if _, got, err := s.List(k); err != nil || len(got) != len(items) {
		t.Fatalf("list: %d items, %v", len(got), err)
	}
	mappedResident := func() int64 {
		t.Helper()
		byFile, err := process.ResidentByFile(os.Getpid())
		if err != nil {
			t.Skipf("no /proc/self/smaps: %v", err)
		}
		return byFile[path]
	}
	before := mappedResident()
	if before < 1<<20 {
		t.Fatalf("only %d bytes of the cache file resident after reading 2,000 items: the test measures nothing", before)
	}
	if err := s.ReleaseMapping(); err != nil {
		t.Fatal(err)
	}
	if after := mappedResident(); after > before/10 {
		t.Errorf("cache file resident: %d bytes before ReleaseMapping, %d after", before, after)
	}
	if _, got, err := s.List(k); err != nil || len(got) != len(items) || string(got[1999].Raw) != string(items[1999].Raw) {
		t.Fatalf("list after the release: %d items, %v", len(got), err)
	}
}
