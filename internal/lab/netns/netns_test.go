package netns

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNamespace(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("skipped: %v (CI runs it as root)", err)
	}
	ctx := context.Background()
	workdir := t.TempDir()
	name := Name(workdir, "n-1")
	if err := Create(ctx, name, net.ParseIP("198.18.1.10")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Delete(context.Background(), name) })

	out, err := Command(ctx, name, "ip", "-o", "addr", "show", "dev", "lo").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "198.18.1.10/32") {
		t.Fatalf("the node's address in the namespace: %v\n%s", err, out)
	}

	// A listener inside is reached from inside, not from the host.
	ln, err := Listen(name, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "inside")
			c.Close()
		}
	}()
	c, err := Dial(ctx, name, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "inside" {
		t.Errorf("read %q through the namespace's loopback", got)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) == "inside" {
			t.Error("the host reaches a listener inside the namespace")
		}
	}

	// Creating it again (a killed lab's leftover) replaces it.
	if err := Create(ctx, name, net.ParseIP("198.18.1.11")); err != nil {
		t.Fatal(err)
	}
	// A killed lab's namespaces all go; another lab's stay.
	other := Name(t.TempDir(), "n-1")
	if err := Create(ctx, other, net.ParseIP("198.18.2.10")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Delete(context.Background(), other) })
	if err := DeleteAll(ctx, workdir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(runDir, name)); !os.IsNotExist(err) {
		t.Errorf("namespace %s is left (%v)", name, err)
	}
	if _, err := os.Stat(filepath.Join(runDir, other)); err != nil {
		t.Errorf("another lab's namespace went too: %v", err)
	}
	if err := Delete(ctx, name); err != nil {
		t.Errorf("deleting a deleted namespace: %v", err)
	}
}
