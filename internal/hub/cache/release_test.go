package cache

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
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
	before := mappedResident(t, path)
	if before < 1<<20 {
		t.Fatalf("only %d bytes of the cache file resident after reading 2,000 items: the test measures nothing", before)
	}
	if err := s.ReleaseMapping(); err != nil {
		t.Fatal(err)
	}
	if after := mappedResident(t, path); after > before/10 {
		t.Errorf("cache file resident: %d bytes before ReleaseMapping, %d after", before, after)
	}
	if _, got, err := s.List(k); err != nil || len(got) != len(items) || string(got[1999].Raw) != string(items[1999].Raw) {
		t.Fatalf("list after the release: %d items, %v", len(got), err)
	}
}

// mappedResident is the resident size of this process's mappings of path.
func mappedResident(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	defer f.Close()
	var total int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			in = len(fields) >= 6 && fields[5] == path
		case in && len(fields) == 3 && fields[0] == "Rss:":
			n, _ := strconv.ParseInt(fields[1], 10, 64)
			total += n * 1024
		}
	}
	return total
}
