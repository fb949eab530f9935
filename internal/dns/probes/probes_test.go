package probes

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/erratic"
	"github.com/miekg/dns"

	"github.com/sitegrid/sitegrid/internal/controlplane"
)

// get returns a probe's status code and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// freeAddr is a loopback address no one listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// TestProbes runs a CoreDNS server whose erratic plugin is ready only
// after its third query and until its fifth: /readyz follows it at every
// request, /healthz is up throughout, and both end with the server.
func TestProbes(t *testing.T) {
	defer func(d []string) { dnsserver.Directives = d }(dnsserver.Directives)
	dnsserver.Directives = []string{"bind", Name, "erratic"}
	addr, udp := freeAddr(t), freeAddr(t)
	_, port, _ := net.SplitHostPort(udp)
	input := caddy.CaddyfileInput{ServerTypeName: "dns", Contents: []byte(fmt.Sprintf(
		"example.org:%s {\n    bind 127.0.0.1\n    probes %s\n    erratic {\n        drop 0\n    }\n}\n", port, addr))}
	i, err := caddy.Start(input)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = i.Stop() }() // the last instance; a second stop is a no-op
	block := "example.org.:" + port
	base := "http://" + addr

	if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok" {
		t.Fatalf("/healthz = %d %q, want 200 ok", code, body)
	}
	query := func() {
		m := new(dns.Msg)
		m.SetQuestion("example.org.", dns.TypeA)
		if _, err := dns.Exchange(m, udp); err != nil {
			t.Fatal(err)
		}
	}
	readyz := func(want int, wantLine string) {
		t.Helper()
		code, body := get(t, base+"/readyz?verbose")
		if code != want || !strings.Contains(body, wantLine) {
			t.Fatalf("/readyz?verbose = %d %q, want %d with %q", code, body, want, wantLine)
		}
	}
	readyz(http.StatusServiceUnavailable, "[-]"+block+" erratic not ready\nreadyz check failed")
	for range 3 {
		query()
	}
	readyz(http.StatusOK, "[+]"+block+" erratic ok\nreadyz check passed")
	if code, body := get(t, base+"/readyz"); code != http.StatusOK || body != "ok" {
		t.Fatalf("/readyz = %d %q, want 200 ok", code, body)
	}
	// Ready is asked at every request, not only until it was first reached.
	for range 2 {
		query()
	}
	readyz(http.StatusServiceUnavailable, "[-]"+block+" erratic not ready")

	// A reload (the reload plugin) moves the probes to the new
	// configuration, whose erratic plugin counts afresh.
	if i, err = i.Restart(input); err != nil {
		t.Fatal(err)
	}
	readyz(http.StatusServiceUnavailable, "[-]"+block+" erratic not ready")
	for range 3 {
		query()
	}
	readyz(http.StatusOK, "[+]"+block+" erratic ok")

	// As at the process's exit: the servers stop, then the shutdown callbacks.
	if err := i.Stop(); err != nil {
		t.Fatal(err)
	}
	if errs := i.ShutdownCallbacks(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("/healthz still answers after the server stopped")
	}
}

func TestSetupRefusesBadInput(t *testing.T) {
	for _, in := range []string{
		"probes 127.0.0.1:1 127.0.0.1:2",
		"probes localhost",
		"probes {\n    verbose\n}",
		"probes\nprobes",
	} {
		if err := setup(caddy.NewTestController("dns", in)); err == nil {
			t.Errorf("setup(%q) took it, want an error", in)
		}
	}
	if err := setup(caddy.NewTestController("dns", "probes")); err != nil {
		t.Errorf("setup(probes) = %v, want the default address", err)
	}
}
