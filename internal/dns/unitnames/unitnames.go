// Package unitnames is sitegrid-dns's CoreDNS plugin for SuperEdge's
// unit-local StatefulSetGrid names: on a node of unit U,
// <grid>-<n>.<service>.<namespace>.svc.<zone> is answered as the pod
// <grid>-<U>-<n> of the node's own unit (the child StatefulSet the grid
// controller made for U, whatever name it got). The question is rewritten
// for the kubernetes plugin after it and the answer carries the name asked.
// The node's unit comes from its own Node's label (the grid's gridUniqKey),
// the children from their labels: both read through the node's hub, so
// cached and offline-safe.
package unitnames

import (
	"context"
	"strconv"
	"strings"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// Name is the plugin's directive.
const Name = "sitegridunits"

// UnitNames rewrites unit-local names.
type UnitNames struct {
	Next  plugin.Handler
	Zones []string
	Index *Index
}

// Name is the plugin's name.
func (u *UnitNames) Name() string { return Name }

// Ready says whether the index has listed its Node and the grids' children
// (the probes plugin's /readyz asks it).
func (u *UnitNames) Ready() bool { return u.Index.Synced() }

// ServeDNS rewrites a unit-local StatefulSetGrid name to the pod of the
// node's unit and passes everything else on untouched.
func (u *UnitNames) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state := request.Request{W: w, Req: r}
	qname := state.Name()
	zone := plugin.Zones(u.Zones).Matches(qname)
	if zone == "" {
		return plugin.NextOrFailure(u.Name(), u.Next, ctx, w, r)
	}
	podName, rest, ok := u.rewrite(strings.TrimSuffix(qname, zone))
	if !ok {
		return plugin.NextOrFailure(u.Name(), u.Next, ctx, w, r)
	}
	asked := r.Question[0].Name
	rewritten := r.Copy()
	rewritten.Question[0].Name = podName + "." + rest + zone
	return plugin.NextOrFailure(u.Name(), u.Next, ctx, &reverter{ResponseWriter: w, asked: asked, rewritten: rewritten.Question[0].Name}, rewritten)
}

// rewrite maps "<grid>-<n>.<service>.<namespace>.svc." to the pod name of
// the node's unit and the rest of the name.
func (u *UnitNames) rewrite(name string) (pod, rest string, ok bool) {
	labels := dns.SplitDomainName(name)
	if len(labels) != 4 || labels[3] != "svc" {
		return "", "", false
	}
	first, service, namespace := labels[0], labels[1], labels[2]
	i := strings.LastIndexByte(first, '-')
	if i <= 0 {
		return "", "", false
	}
	grid, ordinal := first[:i], first[i+1:]
	if _, err := strconv.ParseUint(ordinal, 10, 31); err != nil {
		return "", "", false
	}
	child, ok := u.Index.Child(namespace, service, grid)
	if !ok {
		return "", "", false
	}
	return child + "-" + ordinal, service + "." + namespace + ".svc.", true
}

// reverter gives the client back the name it asked for.
type reverter struct {
	dns.ResponseWriter
	asked, rewritten string
}

func (r *reverter) WriteMsg(m *dns.Msg) error {
	for i := range m.Question {
		m.Question[i].Name = r.asked
	}
	for _, section := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range section {
			if strings.EqualFold(rr.Header().Name, r.rewritten) {
				rr.Header().Name = r.asked
			}
		}
	}
	return r.ResponseWriter.WriteMsg(m)
}
