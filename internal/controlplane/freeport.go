package controlplane

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Ports handed out by FreePort are bound later, by another process, so
// they must not be given to anyone meanwhile. The kernel gives ports of
// its ephemeral range to every listener on port 0 and to every outgoing
// connection: a port of that range free a moment ago is soon taken (a
// lab's uplinks listen on port 0 by the dozen). So FreePort picks at
// random below that range, which only explicit binds use, and never twice
// in a process.
var freePorts = struct {
	sync.Mutex
	given map[int]bool
}{given: map[int]bool{}}

const lowestFreePort = 10000

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, of
// no other FreePort call of this process, and outside the ephemeral range.
func FreePort() (int, error) {
	high := ephemeralLow()
	freePorts.Lock()
	defer freePorts.Unlock()
	for range 1000 {
		port := lowestFreePort + rand.IntN(high-lowestFreePort)
		if freePorts.given[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		_ = l.Close()
		freePorts.given[port] = true
		return port, nil
	}
	return 0, errors.New("no free TCP port on 127.0.0.1 below the ephemeral range after 1000 tries")
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default 32768 when it cannot be read).
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > lowestFreePort+1000 {
				low = n
			}
		}
	}
	return low
}
