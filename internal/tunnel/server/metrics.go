package server

import (
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
)

// Results of a CONNECT, as the streams_total label.
const (
	resultTunnel      = "tunnel"      // carried by a node's session
	resultDirect      = "direct"      // not a tunnelled node: dialled directly
	resultForwarded   = "forwarded"   // carried by the replica holding the node's session
	resultRefused     = "refused"     // not allowed (another node's address, a port not the kubelet's)
	resultUnreachable = "unreachable" // the node is disconnected, or its kubelet did not answer
)

// serverMetrics are the tunnel server's Prometheus metrics.
type serverMetrics struct {
	set                        *metrics.Set
	streams                    map[string]*metrics.Counter
	open                       atomic.Int64
	bytesToNode, bytesFromNode *metrics.Counter
	agentRefused               *metrics.Counter
}

func newServerMetrics(connected func() int) *serverMetrics {
	metrics.ExposeMetadata(true)
	s := metrics.NewSet()
	m := &serverMetrics{set: s, streams: map[string]*metrics.Counter{}}
	for _, r := range []string{resultTunnel, resultForwarded, resultDirect, resultRefused, resultUnreachable} {
		m.streams[r] = s.NewCounter(`sitegrid_tunnel_streams_total{result="` + r + `"}`)
	}
	s.NewGauge("sitegrid_tunnel_connected_nodes", func() float64 { return float64(connected()) })
	s.NewGauge("sitegrid_tunnel_open_streams", func() float64 { return float64(m.open.Load()) })
	m.bytesToNode = s.NewCounter(`sitegrid_tunnel_bytes_total{direction="to_node"}`)
	m.bytesFromNode = s.NewCounter(`sitegrid_tunnel_bytes_total{direction="from_node"}`)
	m.agentRefused = s.NewCounter("sitegrid_tunnel_agents_refused_total")
	return m
}

func (m *serverMetrics) stream(result string) *metrics.Counter { return m.streams[result] }
