package unitnames

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	gridv1 "github.com/sitegrid/sitegrid/api/superedge/v1"
)

// child is a grid's StatefulSet for one unit, labelled as the grid
// controller labels it.
func child(name, grid, unit string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{
			gridv1.LabelGridSelector: grid, gridv1.LabelGridUniqKey: "lab", gridv1.LabelGridUnit: unit}},
		Spec: appsv1.StatefulSetSpec{ServiceName: "db-svc"},
	}
}

// answerer is the kubernetes plugin after this one: it answers A records
// for the names it knows and says which name it was asked.
type answerer struct{ asked string }

func (a *answerer) Name() string { return "answerer" }

func (a *answerer) ServeDNS(_ context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	a.asked = r.Question[0].Name
	m := new(dns.Msg)
	m.SetReply(r)
	m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP("198.19.0.7")}}
	return dns.RcodeSuccess, w.WriteMsg(m)
}

func TestUnitLocalNames(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-a", Labels: map[string]string{"lab": "unit-b"}}}
	client := fake.NewClientset(node,
		child("db-unit-a", "db", "unit-a"),
		// A clash gave unit-b's child another name: the plugin follows the labels.
		child("db-unit-b-1a2b3c4d", "db", "unit-b"))
	ix, err := NewIndex(client, node.Name)
	if err != nil {
		t.Fatal(err)
	}
	ix.Start()
	defer ix.Stop()
	for deadline := time.Now().Add(10 * time.Second); !ix.Synced(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("index did not sync")
		}
	}
	for _, tc := range []struct{ name, asked, want string }{
		{"unit-local name: the pod of the node's unit", "db-0.db-svc.shop.svc.cluster.local.", "db-unit-b-1a2b3c4d-0.db-svc.shop.svc.cluster.local."},
		{"case is kept apart from matching", "DB-2.db-svc.shop.svc.cluster.local.", "db-unit-b-1a2b3c4d-2.db-svc.shop.svc.cluster.local."},
		{"a per-unit name passes", "db-unit-a-0.db-svc.shop.svc.cluster.local.", "db-unit-a-0.db-svc.shop.svc.cluster.local."},
		{"another service passes", "db-0.other.shop.svc.cluster.local.", "db-0.other.shop.svc.cluster.local."},
		{"no ordinal passes", "db.db-svc.shop.svc.cluster.local.", "db.db-svc.shop.svc.cluster.local."},
		{"another zone passes", "db-0.db-svc.shop.svc.example.org.", "db-0.db-svc.shop.svc.example.org."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := &answerer{}
			u := &UnitNames{Next: next, Zones: []string{"cluster.local."}, Index: ix}
			w := dnstest.NewRecorder(&test.ResponseWriter{})
			m := new(dns.Msg)
			m.SetQuestion(tc.asked, dns.TypeA)
			if _, err := u.ServeDNS(context.Background(), w, m); err != nil {
				t.Fatal(err)
			}
			if next.asked != tc.want {
				t.Errorf("the kubernetes plugin was asked %q, want %q", next.asked, tc.want)
			}
			if got := w.Msg.Question[0].Name; got != tc.asked {
				t.Errorf("the answer's question is %q, want the name asked, %q", got, tc.asked)
			}
			if got := w.Msg.Answer[0].Header().Name; got != tc.asked {
				t.Errorf("the answer names %q, want the name asked, %q", got, tc.asked)
			}
		})
	}
}

var _ plugin.Handler = (*UnitNames)(nil)
