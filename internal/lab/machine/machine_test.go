package machine

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (cgroups, mounts, sysctls); CI runs it as root")
	}
}

func TestParseMountInfo(t *testing.T) {
	m, ok := parseMountInfo(`36 35 98:0 /mnt1 /mnt/with\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue`)
	if !ok || m.point != "/mnt/with space" || m.fstype != "ext3" {
		t.Errorf("got %+v, %v", m, ok)
	}
	if _, ok := parseMountInfo("short line"); ok {
		t.Error("a short line parsed")
	}
}

func TestUnmountDeepestFirst(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	outer, inner := filepath.Join(dir, "a"), filepath.Join(dir, "a", "b")
	if err := os.MkdirAll(outer, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", outer, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", inner, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	got, err := Mounts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{inner, outer}; !slices.Equal(got, want) {
		t.Fatalf("Mounts = %v, want %v", got, want)
	}
	if err := Unmount(dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := Mounts(dir); len(got) != 0 {
		t.Fatalf("after Unmount: %v", got)
	}
}

func TestKillEndsTheNodesProcesses(t *testing.T) {
	needRoot(t)
	workdir := t.TempDir()
	root := CgroupRoot(workdir, "node-1")
	if err := EnsureCgroups(root); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = RemoveCgroups(root) })
	if roots, err := CgroupRoots(workdir); err != nil || !slices.Equal(roots, []string{root}) {
		t.Fatalf("CgroupRoots = %v, %v; want [%s]", roots, err, root)
	}
	// A "container": a process moved into the node's cgroups, as runc
	// does, which ignores SIGTERM.
	cmd := exec.Command("sh", "-c", "trap '' TERM; while :; do sleep 1; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	hs, err := hierarchies()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		_ = os.WriteFile(filepath.Join(h, root, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	}
	pids, err := Processes("", root)
	if err != nil || !slices.Contains(pids, cmd.Process.Pid) {
		t.Fatalf("Processes = %v, %v; want %d in it", pids, err, cmd.Process.Pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Kill(ctx, "", root); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the process outlived Kill")
	}
	if err := RemoveCgroups(root); err != nil {
		t.Fatal(err)
	}
	if roots, _ := CgroupRoots(workdir); len(roots) != 0 {
		t.Fatalf("cgroups left: %v", roots)
	}
}

func TestSysctlsRecordedOnceAndRestored(t *testing.T) {
	needRoot(t)
	file := filepath.Join(t.TempDir(), "sysctls.json")
	// A record taken before (by a lab that was killed since) is kept.
	earlier := `{"kernel/panic":"earlier"}`
	if err := os.WriteFile(file, []byte(earlier), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SaveSysctls(file); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(file); string(got) != earlier {
		t.Fatalf("the earlier record was replaced: %s", got)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	// A fresh record holds every setting; writing it back (the current
	// values) changes nothing and removes the record.
	if err := SaveSysctls(file); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(file); !strings.Contains(string(got), `"vm/overcommit_memory"`) {
		t.Fatalf("record: %s", got)
	}
	if err := RestoreSysctls(file); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("record still there: %v", err)
	}
	if err := RestoreSysctls(file); err != nil {
		t.Fatalf("restore without a record: %v", err)
	}
}
