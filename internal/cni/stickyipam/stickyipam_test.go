package stickyipam

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// cniBin is where Debian's containernetworking-plugins puts host-local.
const cniBin = "/usr/lib/cni"

// fixture is a network whose host-local state is in run (what a reboot
// clears) and whose pod addresses are in disk.
type fixture struct {
	t        *testing.T
	run, net string
}

func newFixture(t *testing.T) *fixture {
	if _, err := os.Stat(filepath.Join(cniBin, "host-local")); err != nil {
		t.Skipf("needs host-local in %s (Debian package containernetworking-plugins)", cniBin)
	}
	dir := t.TempDir()
	f := &fixture{t: t, run: filepath.Join(dir, "run")}
	f.net = fmt.Sprintf(`{"cniVersion":"1.0.0","name":"test","type":"bridge","ipam":{"type":"sitegrid-ipam","stateFile":%q,
		"delegate":{"type":"host-local","ranges":[[{"subnet":"198.19.7.0/24"}]],"dataDir":%q}}}`,
		filepath.Join(dir, "disk", "leases.json"), f.run)
	return f
}

func (f *fixture) do(command, container, pod string) (string, error) {
	var out bytes.Buffer
	args := "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + pod + ";K8S_POD_UID=uid-" + pod
	err := Run(Env{Command: command, ContainerID: container, Netns: "/proc/self/ns/net", IfName: "eth0", Args: args, Path: cniBin}, []byte(f.net), &out)
	if err != nil || command != "ADD" {
		return "", err
	}
	return firstIP(out.Bytes())
}

func (f *fixture) add(container, pod string) string {
	f.t.Helper()
	ip, err := f.do("ADD", container, pod)
	if err != nil {
		f.t.Fatalf("ADD %s for %s: %v", container, pod, err)
	}
	return ip
}

func TestPodKeepsItsAddressAcrossReboots(t *testing.T) {
	f := newFixture(t)
	a := f.add("sandbox-a1", "a")
	b := f.add("sandbox-b1", "b")
	if a == b {
		t.Fatalf("two pods got %s", a)
	}
	// Power cut: host-local's state (under /run) is gone; the pods come
	// back in the other order, in new sandboxes.
	if err := os.RemoveAll(f.run); err != nil {
		t.Fatal(err)
	}
	if got := f.add("sandbox-b2", "b"); got != b {
		t.Errorf("pod b after the reboot: %s, want its address %s", got, b)
	}
	if got := f.add("sandbox-a2", "a"); got != a {
		t.Errorf("pod a after the reboot: %s, want its address %s", got, a)
	}
	// The runtime cleans up the sandboxes that died with the power.
	if _, err := f.do("DEL", "sandbox-a1", "a"); err != nil {
		t.Fatal(err)
	}
	if got := f.add("sandbox-c1", "c"); got == a || got == b {
		t.Errorf("a new pod got %s, still held by a running pod", got)
	}
	// Once pod a is really gone, its address is free for others and a
	// later pod of its name does not claim it from the new owner.
	if _, err := f.do("DEL", "sandbox-a2", "a"); err != nil {
		t.Fatal(err)
	}
	d := f.add("sandbox-d1", "d")
	if d != a {
		t.Logf("pod d got %s (host-local's round robin; %s is free again)", d, a)
	}
}

// A sandbox that fails while the node boots is deleted and made again; the
// pod must still get its address, or it takes another pod's (seen in the
// lab: a busybox pod answering on a web pod's address).
func TestFailedSandboxKeepsTheAddress(t *testing.T) {
	f := newFixture(t)
	a, b := f.add("sandbox-a1", "a"), f.add("sandbox-b1", "b")
	if err := os.RemoveAll(f.run); err != nil {
		t.Fatal(err)
	}
	if got := f.add("sandbox-a2", "a"); got != a {
		t.Fatalf("pod a after the reboot: %s, want %s", got, a)
	}
	if _, err := f.do("DEL", "sandbox-a2", "a"); err != nil {
		t.Fatal(err)
	}
	if got := f.add("sandbox-a3", "a"); got != a {
		t.Errorf("pod a's retried sandbox: %s, want its address %s", got, a)
	}
	if got := f.add("sandbox-b2", "b"); got != b {
		t.Errorf("pod b after the reboot: %s, want its address %s", got, b)
	}
}

func TestTakenAddressFallsBackToAnother(t *testing.T) {
	f := newFixture(t)
	a := f.add("sandbox-a1", "a")
	if err := os.RemoveAll(f.run); err != nil {
		t.Fatal(err)
	}
	// Another pod took a's address while a was away.
	if _, err := f.do("DEL", "sandbox-a1", "a"); err != nil {
		t.Fatal(err)
	}
	if got := f.add("sandbox-x1", "x"); got != a {
		t.Fatalf("setup: x got %s, want the first address %s", got, a)
	}
	got := f.add("sandbox-a2", "a")
	if got == a {
		t.Fatalf("pod a got %s, which pod x holds", got)
	}
}

func TestBadConfigurationIsRefused(t *testing.T) {
	var out bytes.Buffer
	for name, conf := range map[string]string{
		"not JSON":    `{`,
		"no delegate": `{"ipam":{"type":"sitegrid-ipam","stateFile":"/tmp/x"}}`,
		"path type":   `{"ipam":{"type":"sitegrid-ipam","stateFile":"/tmp/x","delegate":{"type":"../../bin/sh"}}}`,
	} {
		if err := Run(Env{Command: "ADD", ContainerID: "c", Path: cniBin}, []byte(conf), &out); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
