// Command health measures distributed health's gossip for units of several
// sizes, all members real (sitegrid's gossip member: memberlist over UDP and
// TCP on loopback, encrypted), in one process:
//
//   - messages each member sends per second in steady state (UDP packets
//     plus TCP streams), next to what all-pairs probing would send at the
//     same probe interval (a ping to every other member and an ack to every
//     ping: 2(N-1) per interval);
//
//   - bytes each member sends per second;
//
//   - detection time: from one member's crash to the first survivor whose
//     tally judges it dead (a majority of the unit agreeing), and to all
//     survivors agreeing.
//
//     go run ./hack/bench/health -sizes 10,100,500
package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/health"
	"github.com/sitegrid/sitegrid/internal/hub/gossip"
)

// counting is memberlist's real transport, counting what it sends.
type counting struct {
	*memberlist.NetTransport
	packets, streams, bytes *atomic.Int64
}

func (c *counting) WriteTo(b []byte, addr string) (time.Time, error) {
	c.packets.Add(1)
	c.bytes.Add(int64(len(b)))
	return c.NetTransport.WriteTo(b, addr)
}

func (c *counting) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return c.WriteTo(b, a.Addr)
}

func (c *counting) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c.streams.Add(1)
	conn, err := c.NetTransport.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, bytes: c.bytes}, nil
}

func (c *counting) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return c.DialTimeout(a.Addr, timeout)
}

type countingConn struct {
	net.Conn
	bytes *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.bytes.Add(int64(len(b)))
	return c.Conn.Write(b)
}

type result struct {
	size                         int
	msgsPerNode, bytesPerNode    float64
	allPairs                     float64
	cpuPerNode                   time.Duration // CPU time per member per second, steady
	firstDetect, allDetect       time.Duration // 0: not within detectLimit
	probeInterval, steadyMeasure time.Duration
}

// detectLimit bounds the wait for a verdict.
const detectLimit = 4 * time.Minute

func (r result) row() string {
	d := func(x time.Duration) string {
		if x == 0 {
			return fmt.Sprintf("> %.0f s", detectLimit.Seconds())
		}
		return fmt.Sprintf("%.1f s", x.Seconds())
	}
	return fmt.Sprintf("| %d | %.1f | %.0f | %.0f | %.2f ms | %s | %s |", r.size, r.msgsPerNode, r.allPairs, r.bytesPerNode,
		float64(r.cpuPerNode.Microseconds())/1000, d(r.firstDetect), d(r.allDetect))
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	sizes := flag.String("sizes", "10,100,500", "Unit sizes to measure.")
	steady := flag.Duration("steady", 20*time.Second, "How long steady-state traffic is counted.")
	flag.Parse()
	var results []result
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 3 {
			fmt.Fprintf(os.Stderr, "bad size %q: need an integer of at least 3\n", s)
			os.Exit(2)
		}
		r, err := measure(n, *steady)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "size %d done: %s\n", n, r.row())
	}
	fmt.Printf("machine: %d CPUs, %s\n\n", runtime.NumCPU(), runtime.Version())
	fmt.Println("| members | messages/member/s | all-pairs messages/member/s | bytes/member/s | CPU/member/s | first survivor judges dead | all survivors agree |")
	fmt.Println("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range results {
		fmt.Println(r.row())
	}
}

func measure(n int, steady time.Duration) (result, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return result{}, err
	}
	var packets, streams, bytes atomic.Int64
	probe := memberlist.DefaultLANConfig().ProbeInterval
	members := make([]*gossip.Member, n)
	peers := make([]gossip.Peer, n)
	for i := range n {
		name := fmt.Sprintf("node-%03d", i)
		var m *gossip.Member
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			port, perr := controlplane.FreePort() // memberlist retries below if UDP is taken
			if perr != nil {
				return result{}, perr
			}
			addr := "127.0.0.1:" + strconv.Itoa(port)
			nt, terr := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: port})
			if terr != nil {
				err = terr
				continue
			}
			m, err = gossip.New(gossip.Config{Node: name, BindAddr: addr, Keys: [][]byte{key}, Tune: func(c *memberlist.Config) {
				c.Transport = &counting{NetTransport: nt, packets: &packets, streams: &streams, bytes: &bytes}
			}})
			if err == nil {
				peers[i] = gossip.Peer{Name: name, Addr: addr}
				break
			}
			_ = nt.Shutdown()
		}
		if err != nil {
			return result{}, err
		}
		members[i] = m
	}
	// Shut down in parallel and without waiting long: a unit of 500
	// members takes minutes to stop one after the other.
	defer func() {
		var wg sync.WaitGroup
		for _, m := range members {
			wg.Add(1)
			go func() { defer wg.Done(); m.Shutdown() }()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	}()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, m := range members {
		m.SetPeers(peers)
		wg.Add(1)
		go func() { // what gossip.Run does each second, without the cloud
			defer wg.Done()
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for i := 0; ; i++ {
				m.Tick()
				if i%5 == 0 {
					m.JoinMissing()
					m.Regossip()
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	defer close(stop)

	// Converged: a member's tally has everyone alive.
	fmt.Fprintf(os.Stderr, "size %d: %d members started\n", n, n)
	deadline := time.Now().Add(5 * time.Minute)
	for !allAlive(members[0].Report("u"), n) || !allAlive(members[n-1].Report("u"), n) {
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("a unit of %d did not converge", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "size %d: converged\n", n)
	time.Sleep(5 * time.Second) // joins' push/pulls settle
	p0, s0, b0, c0 := packets.Load(), streams.Load(), bytes.Load(), cpuTime()
	time.Sleep(steady)
	p1, s1, b1, c1 := packets.Load(), streams.Load(), bytes.Load(), cpuTime()
	secs := steady.Seconds() * float64(n)
	r := result{size: n, probeInterval: probe, steadyMeasure: steady,
		msgsPerNode:  float64((p1-p0)+(s1-s0)) / secs,
		bytesPerNode: float64(b1-b0) / secs,
		allPairs:     2 * float64(n-1) / probe.Seconds(),
		cpuPerNode:   time.Duration(float64(c1-c0) / secs),
	}

	// One member crashes; how long until the unit judges it dead.
	victim := members[n/2]
	victimName := peers[n/2].Name
	start := time.Now()
	victim.Shutdown()
	survivors := slices.Delete(slices.Clone(members), n/2, n/2+1)
	judged := make([]bool, len(survivors))
	for left := len(survivors); left > 0; {
		if time.Since(start) > detectLimit {
			members = survivors
			fmt.Fprintf(os.Stderr, "size %d measured: %s\n", n, r.row())
			return r, nil
		}
		for i, m := range survivors {
			if !judged[i] && m.Verdict(victimName) == health.Dead {
				judged[i] = true
				left--
				if r.firstDetect == 0 {
					r.firstDetect = time.Since(start)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.allDetect = time.Since(start)
	members = survivors
	fmt.Fprintf(os.Stderr, "size %d measured: %s\n", n, r.row())
	return r, nil
}

func allAlive(r *health.Report, n int) bool {
	alive := 0
	for _, v := range r.Verdicts {
		if v == health.Alive {
			alive++
		}
	}
	return alive == n
}
