package upstream

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// apiserver is a stand-in /readyz whose health the test switches.
type apiserver struct {
	*httptest.Server
	healthy atomic.Bool
}

func newAPIServer(t *testing.T) *apiserver {
	a := &apiserver{}
	a.healthy.Store(true)
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.healthy.Load() {
			http.Error(w, "etcd not ready", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(a.Close)
	return a
}

type fixture struct {
	t       *testing.T
	tracker *Tracker
	clock   *clocktesting.FakeClock
	mu      sync.Mutex
	changes []bool
}

func start(t *testing.T, endpoints ...string) *fixture {
	f := &fixture{t: t, clock: clocktesting.NewFakeClock(time.Now())}
	tr, err := New(Config{
		Endpoints: endpoints, Client: &http.Client{Timeout: time.Second}, Interval: time.Second, FailureThreshold: 2, Clock: f.clock,
		OnChange: func(online bool) { f.mu.Lock(); f.changes = append(f.changes, online); f.mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.tracker = tr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

// tick advances the probe clock one interval.
func (f *fixture) tick() {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f.clock.HasWaiters() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	f.clock.Step(time.Second)
}

// want waits until the tracker reports the given state.
func (f *fixture) want(url string, online bool) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if got, ok := f.tracker.Online(); ok == online && got == url {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	got, ok := f.tracker.Online()
	f.t.Fatalf("Online() = %q, %t; want %q, %t (%+v)", got, ok, url, online, f.tracker.Statuses())
}

func TestOfflineAfterThresholdAndBack(t *testing.T) {
	a := newAPIServer(t)
	f := start(t, a.URL)
	f.want(a.URL, true)

	a.healthy.Store(false)
	f.tick()
	f.want(a.URL, true) // one failure is not enough
	f.tick()
	f.want("", false)

	a.healthy.Store(true)
	f.tick()
	f.want(a.URL, true)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.changes) != 3 || !f.changes[0] || f.changes[1] || !f.changes[2] {
		t.Errorf("OnChange calls %v, want online, offline, online", f.changes)
	}
}

func TestFailoverIsSticky(t *testing.T) {
	a, b := newAPIServer(t), newAPIServer(t)
	f := start(t, a.URL, b.URL)
	f.want(a.URL, true)

	a.healthy.Store(false)
	f.tick()
	f.tick()
	f.want(b.URL, true)

	// a recovers, but requests stay on b while b is healthy: no flapping.
	a.healthy.Store(true)
	f.tick()
	time.Sleep(50 * time.Millisecond)
	f.want(b.URL, true)

	a.Close() // a is gone for good
	b.healthy.Store(false)
	f.tick()
	f.tick()
	f.want("", false)
}

func TestPassiveReports(t *testing.T) {
	a := newAPIServer(t)
	f := start(t, a.URL)
	f.want(a.URL, true)
	refused := errors.New("dial tcp: connection refused")
	f.tracker.Report(a.URL, refused)
	f.want(a.URL, true)
	f.tracker.Report(a.URL, refused)
	f.want("", false) // two failed requests: offline before the next probe
	f.tracker.Report(a.URL, nil)
	f.want(a.URL, true)
	f.tracker.Report("https://unknown", refused) // ignored
	f.want(a.URL, true)
}

func TestNewRefusesEmptyConfig(t *testing.T) {
	if _, err := New(Config{Client: http.DefaultClient}); err == nil {
		t.Error("no endpoints accepted")
	}
	if _, err := New(Config{Endpoints: []string{"https://x"}}); err == nil {
		t.Error("no client accepted")
	}
}
