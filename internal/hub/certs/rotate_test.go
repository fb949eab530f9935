package certs

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

type counter struct{ n atomic.Int32 }

func (c *counter) Inc() { c.n.Add(1) }

// A renewal that cannot reach the cloud is counted, retried with backoff,
// and leaves the current pair serving.
func TestRenewalFailuresCounted(t *testing.T) {
	certPEM, keyPEM := selfSigned(t, "sitegrid-hub:edge-1", time.Now().Add(-time.Hour), time.Hour+time.Minute) // past its renewal point
	s := NewStore(t.TempDir(), ClientPair)
	current, err := s.Update(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	failures := &counter{}
	r := &rotator{name: "client", store: s, failures: failures,
		client: func() (*Client, error) { return nil, errors.New("the cloud is unreachable") }}
	r.current.Store(current)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.run(ctx); close(done) }()
	for deadline := time.Now().Add(15 * time.Second); failures.n.Load() < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d failed renewals counted, want a first one and its retry", failures.n.Load())
		}
	}
	cancel()
	<-done
	if r.Current() != current {
		t.Error("a failed renewal replaced the current pair")
	}
	if got, err := s.Current(); err != nil || got.Leaf.SerialNumber.Cmp(current.Leaf.SerialNumber) != 0 {
		t.Errorf("the store's current pair changed (%v)", err)
	}
}
