// Package upstream tracks whether the hub can reach the cloud apiservers.
// An active probe (GET /readyz on every endpoint) and passive results of
// proxied requests decide each endpoint's state; callers ask Online and get
// the answer at once, so a request while the cloud is gone is answered from
// the cache without waiting for a dial timeout.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Config configures a Tracker.
type Config struct {
	// Endpoints are apiserver base URLs, in order of preference.
	Endpoints []string
	// Client probes the endpoints; its transport carries the hub's TLS
	// settings and credentials. Its timeout bounds one probe.
	Client *http.Client
	// Interval between probes of each endpoint (default 2 s).
	Interval time.Duration
	// FailureThreshold is how many failures in a row, probed or passive,
	// make an endpoint offline (default 2). One success makes it online.
	FailureThreshold int
	// Clock is injected by tests.
	Clock clock.WithTicker
	// OnChange, when set, is called with the new state when the hub goes
	// online or offline.
	OnChange func(online bool)
}

// Tracker holds the state of every endpoint.
type Tracker struct {
	cfg   Config
	mu    sync.RWMutex
	state []endpointState
	// current is the endpoint requests go to while online.
	current int
	online  bool
}

type endpointState struct {
	url      string
	healthy  bool
	failures int
	lastErr  error
	lastSeen time.Time
}

// New returns a Tracker that starts offline until a probe succeeds.
func New(cfg Config) (*Tracker, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("upstream: no apiserver endpoints")
	}
	if cfg.Client == nil {
		return nil, errors.New("upstream: no HTTP client")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.FailureThreshold <= 0 {
		cfg.FailureThreshold = 2
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	t := &Tracker{cfg: cfg, state: make([]endpointState, len(cfg.Endpoints))}
	for i, e := range cfg.Endpoints {
		t.state[i].url = e
	}
	return t, nil
}

// Online reports whether some endpoint is reachable, and which one requests
// should use. It never blocks on the network.
func (t *Tracker) Online() (string, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if !t.online {
		return "", false
	}
	return t.state[t.current].url, true
}

// Report records the outcome of a proxied request: a transport error counts
// as a failure of the endpoint, any HTTP answer as a success (the apiserver
// answered, even if with an error status).
func (t *Tracker) Report(endpoint string, err error) {
	t.mu.Lock()
	i := t.index(endpoint)
	if i < 0 {
		t.mu.Unlock()
		return
	}
	changed, online := t.record(i, err)
	t.mu.Unlock()
	t.notify(changed, online)
}

// Run probes every endpoint each interval until ctx ends.
func (t *Tracker) Run(ctx context.Context) {
	t.probeAll(ctx)
	tick := t.cfg.Clock.NewTicker(t.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
			t.probeAll(ctx)
		}
	}
}

// Status is one endpoint's state, for /readyz, metrics and logs.
type Status struct {
	URL      string
	Healthy  bool
	LastErr  string
	LastSeen time.Time
}

// Statuses returns every endpoint's state.
func (t *Tracker) Statuses() []Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]Status, len(t.state))
	for i, s := range t.state {
		out[i] = Status{URL: s.url, Healthy: s.healthy, LastSeen: s.lastSeen}
		if s.lastErr != nil {
			out[i].LastErr = s.lastErr.Error()
		}
	}
	return out
}

func (t *Tracker) probeAll(ctx context.Context) {
	var wg sync.WaitGroup
	results := make([]error, len(t.state))
	for i := range t.state {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = t.probe(ctx, t.cfg.Endpoints[i])
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	t.mu.Lock()
	changed, online := false, t.online
	for i, err := range results {
		if c, o := t.record(i, err); c {
			changed, online = true, o
		}
	}
	t.mu.Unlock()
	t.notify(changed, online)
}

// probe asks an endpoint whether it is ready to serve.
func (t *Tracker) probe(ctx context.Context, endpoint string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := t.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/readyz: %s", endpoint, resp.Status)
	}
	return nil
}

// record updates endpoint i with a result and recomputes the overall state;
// it reports whether online changed. Callers hold the lock.
func (t *Tracker) record(i int, err error) (changed, online bool) {
	s := &t.state[i]
	if err == nil {
		s.healthy, s.failures, s.lastErr, s.lastSeen = true, 0, nil, t.cfg.Clock.Now()
	} else {
		s.failures++
		s.lastErr = err
		if s.failures >= t.cfg.FailureThreshold {
			s.healthy = false
		}
	}
	was := t.online
	// Stay on the current endpoint while it is healthy; otherwise fail over
	// to the first healthy one in order of preference.
	if !t.state[t.current].healthy {
		for j := range t.state {
			if t.state[j].healthy {
				t.current = j
				break
			}
		}
	}
	t.online = t.state[t.current].healthy
	return was != t.online, t.online
}

func (t *Tracker) notify(changed, online bool) {
	if changed && t.cfg.OnChange != nil {
		t.cfg.OnChange(online)
	}
}

func (t *Tracker) index(endpoint string) int {
	for i, s := range t.state {
		if s.url == endpoint {
			return i
		}
	}
	return -1
}
