package kubebin

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeCheckout writes tools modules pinning the given versions.
func fakeCheckout(t *testing.T, kube, etcd, kwok string) string {
	t.Helper()
	root := t.TempDir()
	for _, m := range []struct{ dir, pin, version string }{
		{"kube", "k8s.io/kubernetes", kube},
		{"etcd", "go.etcd.io/etcd/server/v3", etcd},
		{"kwok", "sigs.k8s.io/kwok", kwok},
	} {
		dir := filepath.Join(root, "hack", "tools", m.dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		mod := "module example.com/" + m.dir + "\n\ngo 1.26.0\n\nrequire " + m.pin + " " + m.version + "\n"
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "go.sum"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestFolderNameFollowsPins(t *testing.T) {
	a, err := ReadPins(fakeCheckout(t, "v1.37.1", "v3.6.16", "v0.8.0"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kube-v1.37.1", "etcd-v3.6.16", "kwok-v0.8.0"} {
		if !strings.Contains(a.FolderName(), want) {
			t.Errorf("folder %q lacks %q", a.FolderName(), want)
		}
	}
	b, err := ReadPins(fakeCheckout(t, "v1.37.1", "v3.6.15", "v0.8.0"))
	if err != nil {
		t.Fatal(err)
	}
	if a.FolderName() == b.FolderName() {
		t.Errorf("a changed etcd pin kept the folder name %q", a.FolderName())
	}
	same, err := ReadPins(fakeCheckout(t, "v1.37.1", "v3.6.16", "v0.8.0"))
	if err != nil {
		t.Fatal(err)
	}
	if a.FolderName() != same.FolderName() {
		t.Errorf("equal pins gave %q and %q: fresh clones would not share the build", a.FolderName(), same.FolderName())
	}
}

func TestReadPinsNamesMissingPin(t *testing.T) {
	root := fakeCheckout(t, "v1.37.1", "v3.6.16", "v0.8.0")
	if err := os.WriteFile(filepath.Join(root, "hack", "tools", "kwok", "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPins(root); err == nil || !strings.Contains(err.Error(), "sigs.k8s.io/kwok") {
		t.Fatalf("got %v, want an error naming the missing kwok pin", err)
	}
}

func TestEnsureWithoutGoSaysHowToFix(t *testing.T) {
	root := fakeCheckout(t, "v1.37.1", "v3.6.16", "v0.8.0")
	t.Setenv("PATH", t.TempDir())
	t.Setenv(EnvDir, "")
	_, err := Ensure(t.Context(), Options{RepoRoot: root, CacheRoot: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "Go is not installed") || !strings.Contains(err.Error(), EnvDir) {
		t.Fatalf("got %v, want an error that says Go is missing and how to supply binaries", err)
	}
}

func TestEnsureChecksGivenFolder(t *testing.T) {
	t.Setenv(EnvDir, t.TempDir())
	_, err := Ensure(t.Context(), Options{})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("got %v, want an error naming the missing binary", err)
	}
}

// TestEnsureOutsideCheckoutUsesBuiltSet: a lab started outside a checkout
// runs with the set built before, the newest of this Go version; with none
// built it says how to get one.
func TestEnsureOutsideCheckoutUsesBuiltSet(t *testing.T) {
	t.Setenv(EnvDir, "")
	t.Chdir(t.TempDir())
	cache := t.TempDir()
	if _, err := Ensure(t.Context(), Options{CacheRoot: cache}); err == nil || !strings.Contains(err.Error(), "no built set") {
		t.Fatalf("got %v, want an error saying no set is built", err)
	}
	makeSet := func(name string, complete bool, age time.Duration) string {
		dir := filepath.Join(cache, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, st := range steps {
			for i, n := range st.names {
				if !complete && i == 0 {
					continue
				}
				if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/true\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}
		when := time.Now().Add(-age)
		if err := os.Chtimes(dir, when, when); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	old := makeSet("kube-v1.36.0_etcd-v3.6.0_kwok-v0.7.0_"+runtime.Version()+"_aaaa", true, time.Hour)
	makeSet("kube-v1.38.0_etcd-v3.6.0_kwok-v0.8.0_"+runtime.Version()+"_bbbb", false, 0)
	makeSet("kube-v1.38.0_etcd-v3.6.0_kwok-v0.8.0_go1.0_cccc", true, 0)
	set, err := Ensure(t.Context(), Options{CacheRoot: cache})
	if err != nil {
		t.Fatal(err)
	}
	if set.Dir != old {
		t.Fatalf("got %s, want the only complete set of this Go version %s", set.Dir, old)
	}
}

func TestVersionLDFlags(t *testing.T) {
	built := time.Date(2026, 9, 23, 17, 6, 22, 0, time.UTC)
	flags, err := VersionLDFlags("v1.37.1", built)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"-X k8s.io/component-base/version.gitVersion=v1.37.1",
		"-X k8s.io/component-base/version.gitMajor=1",
		"-X k8s.io/component-base/version.gitMinor=37",
		"-X k8s.io/client-go/pkg/version.gitVersion=v1.37.1",
		"-X k8s.io/component-base/version.buildDate=2026-09-23T17:06:22Z",
	} {
		if !strings.Contains(flags, want) {
			t.Errorf("flags %q lack %q", flags, want)
		}
	}
	for _, bad := range []string{"", "1.37.1", "v1.37.1+dirty", "latest"} {
		if _, err := VersionLDFlags(bad, built); err == nil {
			t.Errorf("VersionLDFlags(%q) accepted a version that is not a release tag", bad)
		}
	}
}

// TestSuperEdgeKitIsItsOwnSet: SuperEdge's set is named after its own pin,
// a Kubernetes set does not pass for it, and it is complete only with the
// CRDs copied from its module.
func TestSuperEdgeKitIsItsOwnSet(t *testing.T) {
	root := fakeCheckout(t, "v1.37.1", "v3.6.16", "v0.8.0")
	dir := filepath.Join(root, "hack", "tools", "superedge")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n\nrequire github.com/superedge/superedge v0.9.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	pins, err := SuperEdge.ReadPins(root)
	if err != nil {
		t.Fatal(err)
	}
	if name := pins.FolderName(); !strings.HasPrefix(name, "superedge-v0.9.0_") || strings.Contains(name, "kube-") {
		t.Errorf("folder %q: want one named after SuperEdge's pin only", name)
	}

	set := Set{Dir: t.TempDir(), kit: SuperEdge}
	for _, st := range steps { // a Kubernetes set in the folder
		for _, n := range st.names {
			if err := os.WriteFile(set.Path(n), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := set.Check(); err == nil || !strings.Contains(err.Error(), SuperEdgeGridController) {
		t.Fatalf("got %v, want SuperEdge's controller missing", err)
	}
	for _, n := range SuperEdge.steps[0].names {
		if err := os.WriteFile(set.Path(n), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.Check(); err == nil || !strings.Contains(err.Error(), SuperEdgeManifests) {
		t.Fatalf("got %v, want the CRDs missing", err)
	}
	for _, to := range SuperEdge.steps[0].files {
		if err := os.MkdirAll(filepath.Dir(set.Path(to)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(set.Path(to), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.Check(); err != nil {
		t.Fatal(err)
	}
}
