package cache

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

func podKey(identity string) Key {
	return Key{Identity: identity, Verb: VerbList, Version: "v1", Resource: "pods", FieldSelector: "spec.nodeName=edge-1"}
}

func pod(name, rv string) Item {
	return Item{Namespace: "default", Name: name, Raw: []byte(fmt.Sprintf(`{"metadata":{"name":%q,"resourceVersion":%q}}`, name, rv))}
}

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hub", "cache.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func TestListAndEvents(t *testing.T) {
	s, path := openTemp(t)
	k := podKey("system:node:edge-1")
	if _, _, err := s.List(k); !errors.Is(err, ErrNotCached) {
		t.Fatalf("empty cache: %v", err)
	}
	if err := s.ReplaceList(k, ListMeta{ResourceVersion: "10", Kind: "PodList", APIVersion: "v1"}, []Item{pod("a", "9"), pod("b", "10")}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		typ  EventType
		item Item
		rv   string
	}{
		{Added, pod("c", "11"), "11"},
		{Modified, pod("a", "12"), "12"},
		{Deleted, pod("b", "13"), "13"},
		{Deleted, pod("gone", "14"), "14"}, // already absent: no change but the version
	}
	for _, st := range steps {
		if err := s.ApplyEvent(k, st.typ, st.item, st.rv); err != nil {
			t.Fatal(err)
		}
	}
	meta, items, err := s.List(k)
	if err != nil {
		t.Fatal(err)
	}
	want := []Item{pod("a", "12"), pod("c", "11")}
	if diff := cmp.Diff(want, items); diff != "" {
		t.Errorf("items (-want +got):\n%s", diff)
	}
	if meta.ResourceVersion != "14" || meta.Count != 2 || meta.Kind != "PodList" {
		t.Errorf("meta %+v", meta)
	}
	// Another identity's list of the same pods is another entry.
	if _, _, err := s.List(podKey("system:serviceaccount:kube-system:kube-proxy")); !errors.Is(err, ErrNotCached) {
		t.Errorf("another identity sees the list: %v", err)
	}
	if err := s.ApplyEvent(podKey("other"), Added, pod("x", "1"), "1"); !errors.Is(err, ErrNotCached) {
		t.Errorf("event for an uncached list: %v", err)
	}

	// Objects.
	g := Key{Identity: "kubelet", Verb: VerbGet, Version: "v1", Resource: "nodes", Name: "edge-1"}
	if err := s.PutObject(g, "7", []byte(`{"kind":"Node"}`)); err != nil {
		t.Fatal(err)
	}
	rv, raw, err := s.Object(g)
	if err != nil || rv != "7" || string(raw) != `{"kind":"Node"}` {
		t.Errorf("object: %q %q %v", rv, raw, err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	// The file survives a restart, and only its owner may read it.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode %v, want 0600", fi.Mode().Perm())
	}
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, items, err := s2.List(k); err != nil || len(items) != 2 {
		t.Errorf("after reopening: %d items, %v", len(items), err)
	}
}

// tortureEnv makes the test binary a writer that hammers the cache until it
// is killed.
const tortureEnv = "SITEGRID_CACHE_TORTURE_FILE"

func TestMain(m *testing.M) {
	if path := os.Getenv(tortureEnv); path != "" {
		os.Exit(tortureWriter(path))
	}
	os.Exit(m.Run())
}

// tortureWriter applies events and replaces lists as fast as it can, and
// prints "ready" once it has started writing.
func tortureWriter(path string) int {
	s, err := Open(path)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	keys := []Key{podKey("a"), podKey("b"), {Identity: "a", Verb: VerbList, Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}}
	for _, k := range keys {
		if _, _, err := s.List(k); errors.Is(err, ErrNotCached) {
			if err := s.ReplaceList(k, ListMeta{ResourceVersion: "1"}, nil); err != nil {
				fmt.Println("error:", err)
				return 1
			}
		}
	}
	fmt.Println("ready")
	rv := time.Now().UnixNano()
	for i := 0; ; i++ {
		k := keys[i%len(keys)]
		rv++
		name := "p" + strconv.Itoa(rand.IntN(200))
		var err error
		switch r := rand.IntN(100); {
		case r < 50:
			err = s.ApplyEvent(k, Added, pod(name, strconv.FormatInt(rv, 10)), strconv.FormatInt(rv, 10))
		case r < 80:
			err = s.ApplyEvent(k, Deleted, pod(name, strconv.FormatInt(rv, 10)), strconv.FormatInt(rv, 10))
		case r < 90: // a burst, as the proxy writes them
			burst := make([]Event, 1+rand.IntN(50))
			for j := range burst {
				rv++
				burst[j] = Event{Type: Modified, Item: pod("p"+strconv.Itoa(rand.IntN(200)), strconv.FormatInt(rv, 10)), ResourceVersion: strconv.FormatInt(rv, 10)}
			}
			err = s.ApplyEvents(k, burst)
		case r < 95:
			err = s.PutObject(Key{Identity: "a", Verb: VerbGet, Version: "v1", Resource: "nodes", Name: name}, strconv.FormatInt(rv, 10), pod(name, strconv.FormatInt(rv, 10)).Raw)
		default: // a list streamed in, often long enough to be staged
			var w *ListWriter
			if w, err = s.BeginList(k); err != nil {
				break
			}
			n := rand.IntN(3 * batchItems)
			for j := 0; j < n && err == nil; j += 100 {
				items := make([]Item, 0, 100)
				for x := j; x < min(j+100, n); x++ {
					items = append(items, pod("r"+strconv.Itoa(x), strconv.FormatInt(rv, 10)))
				}
				err = w.Add(items)
			}
			if err == nil {
				err = w.Commit(ListMeta{ResourceVersion: strconv.FormatInt(rv, 10)})
			}
		}
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
	}
}

// TestKillDuringWrites kills a writer with SIGKILL at random moments, many
// times, and finds the cache readable and consistent every time.
func TestKillDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a writer 25 times")
	}
	path := filepath.Join(t.TempDir(), "cache.db")
	for round := 0; round < 25; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), tortureEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if line != "ready\n" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("round %d: writer said %q", round, line)
		}
		time.Sleep(time.Duration(20+rand.IntN(200)) * time.Millisecond)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()

		s, err := Open(path)
		if err != nil {
			t.Fatalf("round %d: cache unreadable after kill -9: %v", round, err)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("round %d: cache inconsistent after kill -9: %v", round, err)
		}
		if _, items, err := s.List(podKey("a")); err != nil {
			t.Fatalf("round %d: list: %v", round, err)
		} else if round == 24 {
			t.Logf("after %d kills: list a holds %d pods", round+1, len(items))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkApplyEvent: the cost of a watch event must not grow with the
// size of the list it updates.
func BenchmarkApplyEvent(b *testing.B) {
	for _, size := range []int{100, 10000} {
		b.Run(strconv.Itoa(size)+" items", func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "cache.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			k := podKey("bench")
			items := make([]Item, size)
			for i := range items {
				items[i] = pod("p"+strconv.Itoa(i), "1")
			}
			if err := s.ReplaceList(k, ListMeta{ResourceVersion: "1"}, items); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rv := strconv.Itoa(i + 2)
				if err := s.ApplyEvent(k, Modified, pod("p"+strconv.Itoa(i%size), rv), rv); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestPutObjectSkipsUnchanged(t *testing.T) {
	s, _ := openTemp(t)
	k := Key{Identity: "kubelet", Verb: VerbGet, Version: "v1", Resource: "nodes", Name: "edge-1"}
	if err := s.PutObject(k, "7", []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	st := s.db.Stats()
	before := st.TxStats.GetWrite()
	if err := s.PutObject(k, "7", []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	st = s.db.Stats()
	if after := st.TxStats.GetWrite(); after != before {
		t.Errorf("an unchanged answer was written again (%d page writes)", after-before)
	}
	if err := s.PutObject(k, "8", []byte(`{"v":2}`)); err != nil {
		t.Fatal(err)
	}
	if rv, raw, err := s.Object(k); err != nil || rv != "8" || string(raw) != `{"v":2}` {
		t.Errorf("a new version was not stored: %q %s %v", rv, raw, err)
	}
}

// TestApplyEventsInOneTransaction: a burst of events ends as one event at a
// time would, at the cost of one commit.
func TestApplyEventsInOneTransaction(t *testing.T) {
	one, _ := openTemp(t)
	burst, _ := openTemp(t)
	k := podKey("system:node:edge-1")
	var events []Event
	for i := 0; i < 200; i++ {
		rv := strconv.Itoa(100 + i)
		switch {
		case i%10 == 9:
			events = append(events, Event{Type: Deleted, Item: pod("p"+strconv.Itoa(i-1), rv), ResourceVersion: rv})
		case i%10 == 5:
			events = append(events, Event{Type: Bookmark, ResourceVersion: rv})
		default:
			events = append(events, Event{Type: Added, Item: pod("p"+strconv.Itoa(i), rv), ResourceVersion: rv})
		}
	}
	for _, s := range []*Store{one, burst} {
		if err := s.ReplaceList(k, ListMeta{ResourceVersion: "99", Kind: "PodList", APIVersion: "v1"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	writes := func(s *Store) int64 { st := s.db.Stats(); return st.TxStats.GetWrite() }
	beforeOne, beforeBurst := writes(one), writes(burst)
	for _, ev := range events {
		if err := one.ApplyEvent(k, ev.Type, ev.Item, ev.ResourceVersion); err != nil {
			t.Fatal(err)
		}
	}
	if err := burst.ApplyEvents(k, events); err != nil {
		t.Fatal(err)
	}
	wantMeta, wantItems, err := one.List(k)
	if err != nil {
		t.Fatal(err)
	}
	gotMeta, gotItems, err := burst.List(k)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantMeta, gotMeta); diff != "" {
		t.Errorf("meta (-one at a time +burst):\n%s", diff)
	}
	if diff := cmp.Diff(wantItems, gotItems); diff != "" {
		t.Errorf("items (-one at a time +burst):\n%s", diff)
	}
	oneWrites, burstWrites := writes(one)-beforeOne, writes(burst)-beforeBurst
	if burstWrites*10 > oneWrites {
		t.Errorf("the burst wrote %d pages, one event at a time %d: not one transaction", burstWrites, oneWrites)
	}
	if err := burst.ApplyEvents(k, []Event{{Type: "ERROR"}}); err == nil {
		t.Error("an ERROR event was applied")
	}
}

// TestListWriter: a list received in batches replaces the cached one only
// when complete; an aborted one, or one a killed hub left half-received,
// leaves the cached list as it was.
func TestListWriter(t *testing.T) {
	s, path := openTemp(t)
	k := podKey("system:node:edge-1")
	if err := s.ReplaceList(k, ListMeta{ResourceVersion: "5", Kind: "PodList", APIVersion: "v1"}, []Item{pod("old", "5")}); err != nil {
		t.Fatal(err)
	}
	aborted, err := s.BeginList(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := aborted.Add([]Item{pod("half", "6")}); err != nil {
		t.Fatal(err)
	}
	aborted.Abort()
	left, err := s.BeginList(k) // never finished: the hub dies
	if err != nil {
		t.Fatal(err)
	}
	many := func(prefix, rv string, n int) []Item {
		var items []Item
		for i := 0; i < n; i++ {
			items = append(items, pod(fmt.Sprintf("%s-%04d", prefix, i), rv))
		}
		return items
	}
	if err := left.Add(many("lost", "7", batchItems+1)); err != nil { // staged
		t.Fatal(err)
	}
	names := func(s *Store) []string {
		t.Helper()
		meta, items, err := s.List(k)
		if err != nil {
			t.Fatal(err)
		}
		out := []string{"rv=" + meta.ResourceVersion, "count=" + strconv.Itoa(meta.Count)}
		for _, it := range items {
			out = append(out, it.Name)
		}
		return out
	}
	if diff := cmp.Diff([]string{"rv=5", "count=1", "old"}, names(s)); diff != "" {
		t.Errorf("unfinished lists changed the cached one (-want +got):\n%s", diff)
	}
	w, err := s.BeginList(k)
	if err != nil {
		t.Fatal(err)
	}
	long := many("p", "8", 2*batchItems+3) // two staged batches and a rest
	for i := 0; i < len(long); i += 100 {
		if err := w.Add(long[i:min(i+100, len(long))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(ListMeta{ResourceVersion: "8", Kind: "PodList", APIVersion: "v1"}); err != nil {
		t.Fatal(err)
	}
	want := []string{"rv=8", "count=" + strconv.Itoa(len(long))}
	for _, it := range long {
		want = append(want, it.Name)
	}
	if diff := cmp.Diff(want, names(s)); diff != "" {
		t.Errorf("committed list (-want +got):\n%s", diff)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	reopened, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if err := reopened.Check(); err != nil {
		t.Fatal(err)
	}
	if err := reopened.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bucketStaging).Stats().KeyN; n != 0 {
			return fmt.Errorf("%d staged entries survived a restart", n)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if diff := cmp.Diff(want, names(reopened)); diff != "" {
		t.Errorf("after reopening (-want +got):\n%s", diff)
	}
}

// ReplaceList and ApplyEvent write a whole list, or one event, as the
// proxy does through ListWriter and ApplyEvents.

// ReplaceList stores a whole list, as after a LIST from the cloud.
func (s *Store) ReplaceList(k Key, meta ListMeta, items []Item) error {
	w, err := s.BeginList(k)
	if err != nil {
		return err
	}
	if err := w.Add(items); err != nil {
		w.Abort()
		return err
	}
	return w.Commit(meta)
}

// ApplyEvent updates a cached list with one watch event, touching only that
// item and the list's metadata.
func (s *Store) ApplyEvent(k Key, typ EventType, item Item, resourceVersion string) error {
	return s.ApplyEvents(k, []Event{{Type: typ, Item: item, ResourceVersion: resourceVersion}})
}
