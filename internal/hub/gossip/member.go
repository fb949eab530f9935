// Package gossip is the hub's side of distributed health: the hubs of one
// NodeUnit form a SWIM gossip group (hashicorp/memberlist) over the site's
// LAN, encrypted and authenticated with the unit's shared keys. Each member
// votes on which members it cannot reach; the votes travel piggybacked on
// the gossip (and in memberlist's periodic state exchange), every member
// tallies them (health.Tally), and one member that reaches the cloud
// publishes the unit's report as a Lease (leaseWriter, run.go).
//
// Probing is memberlist's: each member probes one member per probe interval
// (and asks a few others to probe indirectly when that fails), and gossips
// to a few members per gossip interval, so the messages a member sends do
// not grow with the unit's size; all-pairs probing would send N-1 probes per
// interval.
package gossip

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/health"
)

// Peer is a member of the unit as the cloud lists it: a node and where its
// hub gossips.
type Peer struct {
	Name string
	Addr string // host:port
}

// Config sets up a member.
type Config struct {
	// Node is this member's name (its node).
	Node string
	// BindAddr is where it gossips (UDP and TCP); AdvertiseAddr is what
	// the others dial (default BindAddr).
	BindAddr, AdvertiseAddr string
	// Keys encrypt and authenticate the gossip: the first encrypts, all
	// decrypt. Required.
	Keys [][]byte
	// Tune, when set, adjusts memberlist's LAN configuration (tests and
	// benchmarks shorten intervals; Transport may be replaced).
	Tune func(*memberlist.Config)
	// VoteAfter is how long a new member only listens before it votes
	// (default 5s): its view fills up within its first state exchanges, and
	// a vote per member learnt, gossiped by everyone, would flood a large
	// unit that starts at once.
	VoteAfter time.Duration
}

// Member is one hub in its unit's gossip group.
type Member struct {
	node    string
	ml      *memberlist.Memberlist
	keyring *memberlist.Keyring
	queue   *memberlist.TransmitLimitedQueue

	online atomic.Bool

	mu    sync.Mutex
	peers []Peer // sorted by name; includes this node when the cloud lists it
	votes map[string]health.Vote
	own   health.Vote
	// joining is set while a join runs (joins of unreachable peers wait
	// for TCP timeouts; they never pile up).
	joining bool
	// voteFrom is when the member starts voting (Config.VoteAfter).
	voteFrom time.Time
	// order is the unit's member names, sorted: votes travel as bitmaps
	// over it (wireVote); orderHash names the list, index finds a name.
	order     []string
	orderHash uint64
	index     map[string]int
}

// wireVote is a vote on the wire: the members the voter cannot reach as a
// bitmap over the unit's member names in order, with a hash of that list,
// so a vote stays a few dozen bytes in a unit of hundreds and always fits
// a gossip packet. A member whose list differs (a node joined or left the
// unit a moment ago) cannot read it, and takes the voter's next one.
type wireVote struct {
	Voter  string `json:"v"`
	Seq    int64  `json:"s"`
	List   uint64 `json:"l"`
	Failed []byte `json:"f,omitempty"`
}

// encode writes v over the current member list; callers hold m.mu.
func (m *Member) encode(v health.Vote) (wireVote, bool) {
	w := wireVote{Voter: v.Voter, Seq: v.Seq, List: m.orderHash}
	if len(v.Failed) > 0 {
		w.Failed = make([]byte, (len(m.order)+7)/8)
	}
	for _, n := range v.Failed {
		i, ok := m.index[n]
		if !ok {
			return w, false
		}
		w.Failed[i/8] |= 1 << (i % 8)
	}
	return w, true
}

// decode reads a vote written over the same member list; callers hold
// m.mu. Names are shared with the list, not copied.
func (m *Member) decode(w wireVote) (health.Vote, bool) {
	if w.List != m.orderHash || len(w.Failed) > (len(m.order)+7)/8 {
		return health.Vote{}, false
	}
	v := health.Vote{Voter: w.Voter, Seq: w.Seq}
	for i := range m.order {
		if i/8 < len(w.Failed) && w.Failed[i/8]&(1<<(i%8)) != 0 {
			v.Failed = append(v.Failed, m.order[i])
		}
	}
	return v, true
}

// New starts a member; it joins peers once SetPeers names them.
func New(cfg Config) (*Member, error) {
	if len(cfg.Keys) == 0 {
		return nil, fmt.Errorf("gossip: no encryption key")
	}
	host, port, err := splitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip bind address: %w", err)
	}
	advHost, advPort := host, port
	if cfg.AdvertiseAddr != "" {
		if advHost, advPort, err = splitHostPort(cfg.AdvertiseAddr); err != nil {
			return nil, fmt.Errorf("gossip advertise address: %w", err)
		}
	}
	keyring, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
	if err != nil {
		return nil, fmt.Errorf("gossip keys: %w", err)
	}
	if cfg.VoteAfter == 0 {
		cfg.VoteAfter = 5 * time.Second
	}
	m := &Member{node: cfg.Node, keyring: keyring, votes: map[string]health.Vote{}, voteFrom: time.Now().Add(cfg.VoteAfter)}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Node
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = advHost, advPort
	mc.Keyring = keyring
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	// The unit's messages are small (a vote is a bitmap): compressing each
	// one costs CPU and saves nothing.
	mc.EnableCompression = false
	mc.Delegate = (*delegate)(m)
	mc.Logger = log.New(klogWriter{node: cfg.Node}, "", 0)
	if cfg.Tune != nil {
		cfg.Tune(mc)
	}
	m.queue = &memberlist.TransmitLimitedQueue{NumNodes: func() int { return m.ml.NumMembers() }, RetransmitMult: mc.RetransmitMult}
	if m.ml, err = memberlist.Create(mc); err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	return m, nil
}

// Addr is where the member gossips.
func (m *Member) Addr() string {
	n := m.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// SetKeys installs a new key list: a rotation. The first key encrypts from
// now on; keys no longer listed are dropped.
func (m *Member) SetKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return fmt.Errorf("gossip: no encryption key")
	}
	kr := m.keyring
	for _, k := range keys {
		if err := kr.AddKey(k); err != nil {
			return err
		}
	}
	if err := kr.UseKey(keys[0]); err != nil {
		return err
	}
	for _, old := range kr.GetKeys() {
		if !slices.ContainsFunc(keys, func(k []byte) bool { return string(k) == string(old) }) {
			if err := kr.RemoveKey(old); err != nil {
				return err
			}
		}
	}
	return nil
}

// SetPeers sets the unit's members as the cloud lists them.
func (m *Member) SetPeers(peers []Peer) {
	peers = slices.Clone(peers)
	slices.SortFunc(peers, func(a, b Peer) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	names := make([]string, len(peers))
	for i, p := range peers {
		names[i] = p.Name
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.peers = peers
	if slices.Equal(names, m.order) {
		return
	}
	h := fnv.New64a()
	m.index = make(map[string]int, len(names))
	for i, n := range names {
		_, _ = h.Write([]byte(n))
		_, _ = h.Write([]byte{0})
		m.index[n] = i
	}
	m.order, m.orderHash = names, h.Sum64()
}

// SetOnline tells the others whether this member reaches the cloud (the
// member that publishes the unit's report must).
func (m *Member) SetOnline(online bool) {
	if m.online.Swap(online) != online {
		if err := m.ml.UpdateNode(time.Second); err != nil {
			klog.V(2).InfoS("gossip: announcing reachability of the cloud", "node", m.node, "err", err)
		}
	}
}

// joinFanout is how many members a join contacts: each join is a full
// state exchange, and membership spreads by gossip from there.
const joinFanout = 3

// JoinMissing contacts a few of the unit's members this member does not
// hear, in the background; at most one join runs at a time.
func (m *Member) JoinMissing() {
	alive := m.alive()
	m.mu.Lock()
	if m.joining {
		m.mu.Unlock()
		return
	}
	var addrs []string
	for _, p := range m.peers {
		if p.Name != m.node && !alive[p.Name] {
			addrs = append(addrs, p.Addr)
		}
	}
	if len(addrs) == 0 {
		m.mu.Unlock()
		return
	}
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	addrs = addrs[:min(len(addrs), joinFanout)]
	m.joining = true
	m.mu.Unlock()
	go func() {
		defer func() { m.mu.Lock(); m.joining = false; m.mu.Unlock() }()
		if _, err := m.ml.Join(addrs); err != nil {
			klog.V(4).InfoS("gossip: join", "node", m.node, "err", err)
		}
	}()
}

// alive is the set of members this member hears (itself included).
func (m *Member) alive() map[string]bool {
	out := map[string]bool{}
	for _, n := range m.ml.Members() {
		if n.State == memberlist.StateAlive {
			out[n.Name] = true
		}
	}
	out[m.node] = true
	return out
}

// Tick renews this member's vote from what it hears now and, when the vote
// changed, gossips it. It returns the vote.
func (m *Member) Tick() health.Vote {
	if time.Now().Before(m.voteFrom) {
		return health.Vote{}
	}
	alive := m.alive()
	m.mu.Lock()
	var failed []string
	for _, p := range m.peers {
		if !alive[p.Name] {
			failed = append(failed, p.Name)
		}
	}
	changed := m.own.Voter == "" || !slices.Equal(failed, m.own.Failed)
	if changed {
		m.own = health.Vote{Voter: m.node, Seq: time.Now().UnixNano(), Failed: failed}
		m.votes[m.node] = m.own
	}
	own := m.own
	m.mu.Unlock()
	if changed {
		m.broadcast(own)
	}
	return own
}

// Regossip sends this member's current vote again: a repair for members that
// missed it (memberlist's state exchange repairs too, less often).
func (m *Member) Regossip() {
	m.mu.Lock()
	own := m.own
	m.mu.Unlock()
	if own.Voter != "" {
		m.broadcast(own)
	}
}

// maxGossipVote is the largest vote gossiped in UDP packets (memberlist's
// packets are about 1,400 bytes; a vote in a unit of 5,000 is 900 bytes);
// larger ones travel only in the periodic state exchange over TCP.
const maxGossipVote = 1024

func (m *Member) broadcast(v health.Vote) {
	m.mu.Lock()
	w, ok := m.encode(v)
	m.mu.Unlock()
	if !ok {
		return
	}
	b, err := json.Marshal(w)
	if err != nil || len(b) > maxGossipVote {
		return
	}
	m.queue.QueueBroadcast(&voteBroadcast{voter: v.Voter, msg: b})
}

// merge keeps a vote if it is newer than what is known of its voter, and
// passes it on (user messages are not relayed by memberlist itself).
func (m *Member) merge(v health.Vote, relay bool) {
	if v.Voter == "" || v.Voter == m.node {
		return
	}
	m.mu.Lock()
	old, ok := m.votes[v.Voter]
	newer := !ok || v.Seq > old.Seq
	if newer {
		m.votes[v.Voter] = v
	}
	m.mu.Unlock()
	if newer && relay {
		m.broadcast(v)
	}
}

// Report tallies the votes this member holds, counting the voters it hears.
func (m *Member) Report(unit string) *health.Report {
	alive := m.alive()
	m.mu.Lock()
	defer m.mu.Unlock()
	r := &health.Report{Unit: unit, Reporter: m.node, Time: time.Now().UTC(), Members: make([]string, 0, len(m.peers))}
	counted := map[string]bool{}
	votes := map[string]health.Vote{}
	for _, p := range m.peers {
		r.Members = append(r.Members, p.Name)
		if v, ok := m.votes[p.Name]; ok && alive[p.Name] {
			counted[p.Name] = true
			votes[p.Name] = v
			r.Votes = append(r.Votes, health.Vote{Voter: v.Voter, Failed: v.Failed})
		}
	}
	r.Verdicts = health.Tally(r.Members, counted, votes)
	return r
}

// Verdict is what this member's tally says of one node (Report's verdict,
// without tallying the others).
func (m *Member) Verdict(node string) health.Verdict {
	alive := m.alive()
	m.mu.Lock()
	defer m.mu.Unlock()
	members := make([]string, 0, len(m.peers))
	for _, p := range m.peers {
		members = append(members, p.Name)
	}
	return health.Judge(node, members, alive, m.votes)
}

// Publisher reports whether this member is the one that publishes: it
// reaches the cloud, and no member it hears that also reaches the cloud has
// a smaller name.
func (m *Member) Publisher() bool {
	if !m.online.Load() {
		return false
	}
	for _, n := range m.ml.Members() {
		if n.State == memberlist.StateAlive && n.Name < m.node && len(n.Meta) > 0 && n.Meta[0] == 1 {
			return false
		}
	}
	return true
}

// Leave tells the others this member goes (a shutdown, not a failure) and
// stops it.
func (m *Member) Leave() {
	_ = m.ml.Leave(time.Second)
	_ = m.ml.Shutdown()
}

// Shutdown stops the member without telling the others, as a crash would.
func (m *Member) Shutdown() { _ = m.ml.Shutdown() }

// delegate is memberlist's view of a Member.
type delegate Member

func (d *delegate) NodeMeta(limit int) []byte {
	if (*Member)(d).online.Load() {
		return []byte{1}
	}
	return []byte{0}
}

func (d *delegate) NotifyMsg(b []byte) {
	var w wireVote
	if err := json.Unmarshal(b, &w); err != nil {
		return
	}
	d.mu.Lock()
	v, ok := (*Member)(d).decode(w)
	d.mu.Unlock()
	if ok {
		(*Member)(d).merge(v, true)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

// LocalState is every vote this member knows, for memberlist's periodic
// full state exchange (over TCP: no packet size limit).
func (d *delegate) LocalState(join bool) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]wireVote, 0, len(d.votes))
	for _, v := range d.votes {
		if w, ok := (*Member)(d).encode(v); ok {
			out = append(out, w)
		}
	}
	b, _ := json.Marshal(out)
	return b
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	var ws []wireVote
	if err := json.Unmarshal(buf, &ws); err != nil {
		return
	}
	votes := make([]health.Vote, 0, len(ws))
	d.mu.Lock()
	for _, w := range ws {
		if v, ok := (*Member)(d).decode(w); ok {
			votes = append(votes, v)
		}
	}
	d.mu.Unlock()
	for _, v := range votes {
		(*Member)(d).merge(v, false)
	}
}

type voteBroadcast struct {
	voter string
	msg   []byte
}

func (b *voteBroadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*voteBroadcast)
	return ok && ob.voter == b.voter
}
func (b *voteBroadcast) Message() []byte { return b.msg }
func (b *voteBroadcast) Finished()       {}

func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", addr)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, p, nil
}

// klogWriter sends memberlist's log lines to klog at a verbosity that keeps
// routine chatter out of the hub's log.
type klogWriter struct{ node string }

func (w klogWriter) Write(p []byte) (int, error) {
	klog.V(3).InfoS("memberlist", "node", w.node, "msg", string(p))
	return len(p), nil
}

var _ io.Writer = klogWriter{}
