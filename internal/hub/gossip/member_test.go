package gossip

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/sitegrid/sitegrid/internal/health"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// wall is a network fault between groups of members: packets and streams
// from one side to the other are dropped, as a split site LAN would.
type wall struct {
	mu   sync.Mutex
	side map[string]int // address -> side; 0 everywhere means no wall
}

func (w *wall) blocked(from, to string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.side[from] != w.side[to]
}

func (w *wall) split(sides ...[]string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.side = map[string]int{}
	for i, s := range sides {
		for _, addr := range s {
			w.side[addr] = i + 1
		}
	}
}

// walledTransport is memberlist's real UDP/TCP transport with a wall.
type walledTransport struct {
	*memberlist.NetTransport
	self string
	wall *wall
}

func (t *walledTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.wall.blocked(t.self, addr) {
		return time.Now(), nil // lost on the way
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *walledTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.wall.blocked(t.self, addr) {
		return nil, fmt.Errorf("dial %s: no route to host", addr)
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

// memberlist calls these when the transport knows node addresses (the
// embedded NetTransport does); they must meet the wall too.
func (t *walledTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *walledTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func newKey(t *testing.T) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// fast shortens memberlist's LAN timings so tests take seconds.
func fast(c *memberlist.Config) {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.SuspicionMult = 2
	c.GossipInterval = 30 * time.Millisecond
	c.PushPullInterval = time.Second
	c.TCPTimeout = time.Second
}

type unit struct {
	t       *testing.T
	w       *wall
	members map[string]*Member
	peers   []Peer
}

func startUnit(t *testing.T, n int, keys [][]byte) *unit {
	t.Helper()
	u := &unit{t: t, w: &wall{}, members: map[string]*Member{}}
	for i := range n {
		name := fmt.Sprintf("node-%d", i+1)
		// Port 0: the transport binds TCP to a free port and UDP to the
		// same one, which another process may hold; memberlist retries that
		// itself when it makes its transport, and so does this.
		var nt *memberlist.NetTransport
		var err error
		for range 10 {
			if nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}}); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(nt.GetAutoBindPort())
		m, err := New(Config{Node: name, BindAddr: addr, Keys: keys, VoteAfter: 200 * time.Millisecond, Tune: func(c *memberlist.Config) {
			fast(c)
			c.Transport = &walledTransport{NetTransport: nt, self: addr, wall: u.w}
		}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Shutdown)
		u.members[name] = m
		u.peers = append(u.peers, Peer{Name: name, Addr: addr})
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, m := range u.members {
		m.SetPeers(u.peers)
		go func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				m.Tick()
				if i%10 == 0 {
					m.JoinMissing()
					m.Regossip()
				}
			}
		}()
	}
	return u
}

// verdicts waits until member's report says want.
func (u *unit) verdicts(member string, want map[string]health.Verdict) {
	u.t.Helper()
	testenv.Eventually(u.t, 30*time.Second, func(context.Context) error {
		got := u.members[member].Report("u").Verdicts
		for k, v := range want {
			if got[k] != v {
				return fmt.Errorf("%s's report says %v, want %v", member, got, want)
			}
		}
		return nil
	})
}

func TestUnitDetectsADeadMember(t *testing.T) {
	u := startUnit(t, 5, [][]byte{newKey(t)})
	all := map[string]health.Verdict{"node-1": health.Alive, "node-2": health.Alive, "node-3": health.Alive, "node-4": health.Alive, "node-5": health.Alive}
	for name := range u.members {
		u.verdicts(name, all)
	}
	// node-5 crashes: the four others are a majority of five.
	u.members["node-5"].Shutdown()
	dead := map[string]health.Verdict{"node-1": health.Alive, "node-2": health.Alive, "node-3": health.Alive, "node-4": health.Alive, "node-5": health.Dead}
	for _, name := range []string{"node-1", "node-2", "node-3", "node-4"} {
		u.verdicts(name, dead)
	}
	if v := u.members["node-2"].Verdict("node-5"); v != health.Dead {
		t.Errorf("node-2's verdict on node-5 alone: %s, want dead", v)
	}
	r := u.members["node-1"].Report("u")
	if len(r.Votes) != 4 || r.Votes[0].Voter != "node-1" || len(r.Votes[0].Failed) != 1 || r.Votes[0].Failed[0] != "node-5" {
		t.Errorf("node-1's report holds votes %+v", r.Votes)
	}

	// Who publishes: the smallest name among members that reach the cloud.
	u.members["node-3"].SetOnline(true)
	u.members["node-2"].SetOnline(true)
	testenv.Eventually(t, 10*time.Second, func(context.Context) error {
		if !u.members["node-2"].Publisher() || u.members["node-3"].Publisher() || u.members["node-1"].Publisher() {
			return fmt.Errorf("publishers: node-1 %v, node-2 %v, node-3 %v; want node-2 only",
				u.members["node-1"].Publisher(), u.members["node-2"].Publisher(), u.members["node-3"].Publisher())
		}
		return nil
	})
	u.members["node-2"].SetOnline(false)
	testenv.Eventually(t, 10*time.Second, func(context.Context) error {
		if !u.members["node-3"].Publisher() {
			return fmt.Errorf("node-3 does not publish after node-2 lost the cloud")
		}
		return nil
	})
}

func TestUnitSplitEvenlyCondemnsNobody(t *testing.T) {
	u := startUnit(t, 4, [][]byte{newKey(t)})
	all := map[string]health.Verdict{"node-1": health.Alive, "node-2": health.Alive, "node-3": health.Alive, "node-4": health.Alive}
	u.verdicts("node-1", all)
	u.verdicts("node-4", all)
	u.w.split([]string{u.peers[0].Addr, u.peers[1].Addr}, []string{u.peers[2].Addr, u.peers[3].Addr})
	u.verdicts("node-1", map[string]health.Verdict{"node-1": health.Alive, "node-2": health.Alive, "node-3": health.Unknown, "node-4": health.Unknown})
	u.verdicts("node-4", map[string]health.Verdict{"node-1": health.Unknown, "node-2": health.Unknown, "node-3": health.Alive, "node-4": health.Alive})
	// 3-1: the three are a majority and judge the fourth dead.
	u.w.split([]string{u.peers[0].Addr, u.peers[1].Addr, u.peers[2].Addr}, []string{u.peers[3].Addr})
	u.verdicts("node-1", map[string]health.Verdict{"node-1": health.Alive, "node-2": health.Alive, "node-3": health.Alive, "node-4": health.Dead})
	u.verdicts("node-4", map[string]health.Verdict{"node-1": health.Unknown, "node-2": health.Unknown, "node-3": health.Unknown, "node-4": health.Unknown})
	// Healed: everyone is alive again.
	u.w.split()
	u.verdicts("node-4", all)
	u.verdicts("node-1", all)
}

func TestGossipNeedsTheKey(t *testing.T) {
	key := newKey(t)
	u := startUnit(t, 2, [][]byte{key})
	u.verdicts("node-1", map[string]health.Verdict{"node-1": health.Alive, "node-2": health.Alive})
	// A stranger with another key cannot join the unit.
	stranger, err := New(Config{Node: "stranger", BindAddr: "127.0.0.1:0", Keys: [][]byte{newKey(t)}, Tune: fast})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Shutdown()
	if _, err := stranger.ml.Join([]string{u.peers[0].Addr}); err == nil {
		t.Error("a member with a wrong key joined")
	}
	if n := u.members["node-1"].ml.NumMembers(); n != 2 {
		t.Errorf("node-1 knows %d members, want 2", n)
	}

	// Rotation: the new key is added everywhere, then made primary, then
	// the old one dropped; the unit stays together throughout.
	next := newKey(t)
	for _, step := range [][][]byte{{key, next}, {next, key}, {next}} {
		for _, m := range u.members {
			if err := m.SetKeys(step); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(300 * time.Millisecond)
		u.verdicts("node-2", map[string]health.Verdict{"node-1": health.Alive, "node-2": health.Alive})
	}
	if got := u.members["node-1"].keyring.GetKeys(); len(got) != 1 || string(got[0]) != string(next) {
		t.Errorf("keyring after rotation holds %d keys", len(got))
	}
	if err := u.members["node-1"].SetKeys(nil); err == nil {
		t.Error("an empty key list was accepted")
	}
}

func TestParseKeys(t *testing.T) {
	k32 := make([]byte, 32)
	k16 := make([]byte, 16)
	for i := range k32 {
		k32[i] = byte(i)
	}
	good := base64.StdEncoding.EncodeToString(k32) + "\n\n  " + base64.StdEncoding.EncodeToString(k16) + "  \n"
	keys, err := ParseKeys([]byte(good))
	if err != nil || len(keys) != 2 || len(keys[0]) != 32 || len(keys[1]) != 16 {
		t.Fatalf("ParseKeys: %d keys, %v", len(keys), err)
	}
	for in, want := range map[string]string{
		"":            "no key",
		"not base64!": "line 1 is not base64",
		base64.StdEncoding.EncodeToString(make([]byte, 20)): "16, 24 or 32 bytes, not 20",
	} {
		if _, err := ParseKeys([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKeys(%q): %v, want an error saying %q", in, err, want)
		}
	}
}

func TestVoteWire(t *testing.T) {
	m := &Member{}
	var peers []Peer
	for i := range 500 {
		peers = append(peers, Peer{Name: fmt.Sprintf("node-%03d", i)})
	}
	m.SetPeers(peers)
	v := health.Vote{Voter: "node-001", Seq: 7, Failed: []string{"node-000", "node-250", "node-499"}}
	w, ok := m.encode(v)
	if !ok {
		t.Fatal("encode failed")
	}
	if b, _ := json.Marshal(w); len(b) > 150 {
		t.Errorf("a vote in a unit of 500 takes %d bytes", len(b))
	}
	got, ok := m.decode(w)
	if !ok || got.Voter != v.Voter || got.Seq != v.Seq || !slices.Equal(got.Failed, v.Failed) {
		t.Errorf("round trip: %+v, %v", got, ok)
	}
	if _, ok := m.encode(health.Vote{Voter: "x", Failed: []string{"stranger"}}); ok {
		t.Error("a vote naming a non-member was encoded")
	}
	// Another member list (a node joined): the vote cannot be read.
	other := &Member{}
	other.SetPeers(append(slices.Clone(peers), Peer{Name: "node-500"}))
	if _, ok := other.decode(w); ok {
		t.Error("a vote over another member list was read")
	}
	w.Failed = make([]byte, 200)
	if _, ok := m.decode(w); ok {
		t.Error("an oversized bitmap was read")
	}
}
