// Package kubebin finds or builds the Kubernetes, etcd and kwok binaries that
// the test harness and the lab run. They are built from Go source through the
// Go module proxy, from the tools modules under hack/tools, into a folder
// named after the pins, so a pin change builds a new set and fresh clones on
// the same machine reuse the old one.
package kubebin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/mod/modfile"
)

// Binary names in a Set.
const (
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	KubeScheduler         = "kube-scheduler"
	KubeProxy             = "kube-proxy"
	Kubectl               = "kubectl"
	Kubelet               = "kubelet"
	Etcd                  = "etcd"
	Kwok                  = "kwok"
	Kwokctl               = "kwokctl"
	// KwokStages prints kwok's default stages (hack/tools/kwok/kwok-stages).
	KwokStages = "kwok-stages"

	// SuperEdge's cloud controllers and edge agents (Kit SuperEdge).
	SuperEdgeGridController = "application-grid-controller"
	SuperEdgeSiteManager    = "site-manager"
	SuperEdgeGridWrapper    = "application-grid-wrapper"
	SuperEdgeLiteAPIServer  = "lite-apiserver"
	// SuperEdgeManifests is the folder of a SuperEdge set holding its grid
	// CRDs, copied from the module: superedge.io_*.yaml.
	SuperEdgeManifests = "manifests"

	// MetricsServer is metrics-server (Kit MetricsServer).
	MetricsServer = "metrics-server"
)

// Environment variables that change where binaries come from.
const (
	// EnvDir names a folder holding every binary of the Kubernetes kit
	// already; nothing is built.
	EnvDir = "SITEGRID_KUBE_BIN"
	// EnvCache overrides the cache root (default: the user cache folder).
	EnvCache = "SITEGRID_KUBE_BIN_CACHE"
)

// A step builds the tools of one module under hack/tools.
type step struct {
	module string // folder under hack/tools
	pin    string // module path whose version names the set
	label  string // short name used in the folder name
	// mainPkg, when set, is the one main package built, as names[0]; go build
	// would name etcd's go.etcd.io/etcd/server/v3 "v3". Otherwise every
	// `tool` of the module and every package in extra is built under its own
	// name.
	mainPkg string
	extra   []string
	names   []string
	// stampVersion sets the version the binaries report the way
	// Kubernetes' own build does (hack/lib/version.sh).
	stampVersion bool
	// files are copied from the pinned module's source into the set's
	// folder: module-relative path -> path in the set.
	files map[string]string
}

var steps = []step{
	{module: "kube", pin: "k8s.io/kubernetes", label: "kube",
		names: []string{KubeAPIServer, KubeControllerManager, KubeScheduler, KubeProxy, Kubectl, Kubelet}, stampVersion: true},
	{module: "etcd", pin: "go.etcd.io/etcd/server/v3", label: "etcd",
		mainPkg: "go.etcd.io/etcd/server/v3", names: []string{Etcd}},
	{module: "kwok", pin: "sigs.k8s.io/kwok", label: "kwok",
		extra: []string{"./" + KwokStages}, names: []string{Kwok, Kwokctl, KwokStages}},
}

// A Kit is what is built together into one folder. The zero Kit is
// Kubernetes: what the test harness and the lab always run.
type Kit struct {
	steps []step
}

// SuperEdge is SuperEdge's controllers and agents with its CRDs, for the
// migration tests; built only when asked for.
var SuperEdge = Kit{steps: []step{{module: "superedge", pin: "github.com/superedge/superedge", label: "superedge",
	names: []string{SuperEdgeGridController, SuperEdgeSiteManager, SuperEdgeGridWrapper, SuperEdgeLiteAPIServer},
	// The grid CRDs, which application-grid-controller reads from files;
	// site-manager installs the site CRDs itself (its --ensure-crd).
	files: map[string]string{
		"pkg/application-grid-controller/manifests/superedge.io_deploymentgrids.yaml":  "manifests/superedge.io_deploymentgrids.yaml",
		"pkg/application-grid-controller/manifests/superedge.io_statefulsetgrids.yaml": "manifests/superedge.io_statefulsetgrids.yaml",
		"pkg/application-grid-controller/manifests/superedge.io_servicegrids.yaml":     "manifests/superedge.io_servicegrids.yaml",
	}}}}

// MetricsServerKit is metrics-server, which the lab runs for `kubectl top`;
// built only when asked for.
var MetricsServerKit = Kit{steps: []step{{module: "metrics-server", pin: "sigs.k8s.io/metrics-server", label: "metrics-server",
	names: []string{MetricsServer}}}}

func (k Kit) stepList() []step {
	if k.steps == nil {
		return steps
	}
	return k.steps
}

// Set is a folder holding every binary of a kit.
type Set struct {
	Dir string
	kit Kit
}

// Path returns the path of the named binary.
func (s Set) Path(name string) string { return filepath.Join(s.Dir, name) }

// Check reports the first missing binary.
func (s Set) Check() error {
	for _, st := range s.kit.stepList() {
		for _, n := range st.names {
			if fi, err := os.Stat(s.Path(n)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				return fmt.Errorf("binary %s missing in %s", n, s.Dir)
			}
		}
		for _, to := range st.files {
			if _, err := os.Stat(s.Path(to)); err != nil {
				return fmt.Errorf("file %s missing in %s", to, s.Dir)
			}
		}
	}
	return nil
}

// Options says where to look and where to report progress.
type Options struct {
	// RepoRoot is the sitegrid checkout; empty means search upwards from the
	// working directory.
	RepoRoot string
	// CacheRoot holds the built sets; empty means $SITEGRID_KUBE_BIN_CACHE or
	// the user cache folder.
	CacheRoot string
	// Progress receives one line per step; nil discards it.
	Progress io.Writer
	// Kit is what to build; the zero Kit is Kubernetes, etcd and kwok.
	Kit Kit
}

// Pins names the pinned versions and the hash of the tools modules.
type Pins struct {
	Versions map[string]string // label -> version
	Hash     string
	kit      Kit
}

// FolderName is the folder a set of these pins is built into.
func (p Pins) FolderName() string {
	steps := p.kit.stepList()
	parts := make([]string, 0, len(steps)+2)
	for _, st := range steps {
		parts = append(parts, st.label+"-"+p.Versions[st.label])
	}
	parts = append(parts, runtime.Version(), p.Hash)
	return strings.Join(parts, "_")
}

// ReadPins reads the pins of the Kubernetes kit from the tools modules of
// a checkout.
func ReadPins(repoRoot string) (Pins, error) { return Kit{}.ReadPins(repoRoot) }

// ReadPins reads the kit's pins from the tools modules of a checkout.
func (k Kit) ReadPins(repoRoot string) (Pins, error) {
	p := Pins{Versions: map[string]string{}, kit: k}
	h := sha256.New()
	for _, st := range k.stepList() {
		dir := filepath.Join(repoRoot, "hack", "tools", st.module)
		modData, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err != nil {
			return p, err
		}
		sumData, err := os.ReadFile(filepath.Join(dir, "go.sum"))
		if err != nil {
			return p, err
		}
		mf, err := modfile.Parse(filepath.Join(dir, "go.mod"), modData, nil)
		if err != nil {
			return p, err
		}
		for _, r := range mf.Require {
			if r.Mod.Path == st.pin {
				p.Versions[st.label] = r.Mod.Version
			}
		}
		if p.Versions[st.label] == "" {
			return p, fmt.Errorf("%s/go.mod does not require %s", dir, st.pin)
		}
		h.Write(modData)
		h.Write(sumData)
	}
	p.Hash = hex.EncodeToString(h.Sum(nil))[:10]
	return p, nil
}

// FindRepoRoot walks up from dir to the sitegrid checkout that holds the
// tools modules.
func FindRepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "hack", "tools", "kube", "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no sitegrid checkout (hack/tools/kube/go.mod) above %s", dir)
		}
	}
}

// CacheRoot returns where built sets are kept.
func CacheRoot() (string, error) {
	if d := os.Getenv(EnvCache); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "sitegrid", "kube-bin"), nil
}

// Ensure returns a complete set, building it first if needed.
func Ensure(ctx context.Context, opts Options) (Set, error) {
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	if d := os.Getenv(EnvDir); d != "" && opts.Kit.steps == nil {
		s := Set{Dir: d}
		if err := s.Check(); err != nil {
			return s, fmt.Errorf("$%s: %w", EnvDir, err)
		}
		return s, nil
	}
	root := opts.RepoRoot
	if root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return Set{}, err
		}
		if root, err = FindRepoRoot(wd); err != nil {
			// Outside a checkout the pins cannot be read, but a set built
			// before (by `make kube-bin` or a lab) serves.
			if set, cacheErr := newestCached(opts.CacheRoot, opts.Kit); cacheErr == nil {
				fmt.Fprintf(progress, "kube-bin: not in a sitegrid checkout; using the built set %s\n", set.Dir)
				return set, nil
			}
			return Set{}, fmt.Errorf("%w, and no built set is in the cache: run from a sitegrid checkout (it builds them), or set $%s to a folder holding the binaries", err, EnvDir)
		}
	}
	pins, err := opts.Kit.ReadPins(root)
	if err != nil {
		return Set{}, err
	}
	cache := opts.CacheRoot
	if cache == "" {
		if cache, err = CacheRoot(); err != nil {
			return Set{}, err
		}
	}
	set := Set{Dir: filepath.Join(cache, pins.FolderName()), kit: opts.Kit}
	if set.Check() == nil {
		return set, nil
	}
	if _, err := exec.LookPath("go"); err != nil {
		return set, fmt.Errorf("the Kubernetes binaries are not built (%s) and Go is not installed to build them: install Go %s or newer, or set $%s", set.Dir, strings.TrimPrefix(runtime.Version(), "go"), EnvDir)
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return set, err
	}
	// Parallel test packages and labs share the cache: one builds, the others
	// wait for it and then find the finished set.
	unlock, err := lockFile(ctx, filepath.Join(cache, ".lock"), progress)
	if err != nil {
		return set, err
	}
	defer unlock()
	if set.Check() == nil {
		return set, nil
	}
	return set, build(ctx, root, set, pins, progress)
}

// newestCached returns the most recently built complete set in the cache
// that this Go version built.
func newestCached(cacheRoot string, kit Kit) (Set, error) {
	if cacheRoot == "" {
		var err error
		if cacheRoot, err = CacheRoot(); err != nil {
			return Set{}, err
		}
	}
	entries, err := os.ReadDir(cacheRoot)
	if err != nil {
		return Set{}, err
	}
	var best Set
	var bestTime time.Time
	for _, e := range entries {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".partial") || !strings.Contains(e.Name(), "_"+runtime.Version()+"_") {
			continue
		}
		set := Set{Dir: filepath.Join(cacheRoot, e.Name()), kit: kit}
		info, err := e.Info()
		if err != nil || set.Check() != nil {
			continue
		}
		if info.ModTime().After(bestTime) {
			best, bestTime = set, info.ModTime()
		}
	}
	if best.Dir == "" {
		return Set{}, fmt.Errorf("no complete set built by %s in %s", runtime.Version(), cacheRoot)
	}
	return best, nil
}

func build(ctx context.Context, root string, set Set, pins Pins, progress io.Writer) error {
	tmp := set.Dir + ".partial"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	start := time.Now()
	fmt.Fprintf(progress, "kube-bin: building %s into %s\n", pins.FolderName(), set.Dir)
	steps := set.kit.stepList()
	for i, st := range steps {
		stepStart := time.Now()
		fmt.Fprintf(progress, "kube-bin: [%d/%d] %s %s (%s)\n", i+1, len(steps), st.pin, pins.Versions[st.label], strings.Join(st.names, ", "))
		if err := buildStep(ctx, filepath.Join(root, "hack", "tools", st.module), tmp, st, pins.Versions[st.label], progress, start); err != nil {
			return fmt.Errorf("build %s: %w", st.module, err)
		}
		fmt.Fprintf(progress, "kube-bin: [%d/%d] done in %s (elapsed %s)\n", i+1, len(steps), since(stepStart), since(start))
	}
	if err := os.Rename(tmp, set.Dir); err != nil {
		return err
	}
	fmt.Fprintf(progress, "kube-bin: ready in %s\n", since(start))
	return set.Check()
}

func buildStep(ctx context.Context, modDir, out string, st step, version string, progress io.Writer, start time.Time) error {
	ldflags := "-ldflags=-s -w"
	if st.stampVersion {
		stamp, err := VersionLDFlags(version, time.Now())
		if err != nil {
			return err
		}
		ldflags += " " + stamp
	}
	args := append([]string{"build", "-trimpath", ldflags, "-o", out + string(os.PathSeparator), "tool"}, st.extra...)
	if st.mainPkg != "" {
		args = []string{"build", "-trimpath", ldflags, "-o", filepath.Join(out, st.names[0]), st.mainPkg}
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	var outBuf strings.Builder
	cmd.Stdout = &outBuf
	cmd.Stderr = &outBuf
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("%w\n%s", err, outBuf.String())
			}
			return copyModuleFiles(ctx, modDir, out, st)
		case <-tick.C:
			fmt.Fprintf(progress, "kube-bin:       still compiling %s (elapsed %s)\n", st.module, since(start))
		}
	}
}

// copyModuleFiles copies the step's files out of the pinned module's source
// in the module cache.
func copyModuleFiles(ctx context.Context, modDir, out string, st step) error {
	if len(st.files) == 0 {
		return nil
	}
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", st.pin)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	dirOut, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("locate %s's source: %w", st.pin, err)
	}
	src := strings.TrimSpace(string(dirOut))
	for from, to := range st.files {
		data, err := os.ReadFile(filepath.Join(src, from))
		if err != nil {
			return err
		}
		dst := filepath.Join(out, to)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func lockFile(ctx context.Context, path string, progress io.Writer) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	waiting := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, err
		}
		if !waiting {
			fmt.Fprintf(progress, "kube-bin: another process is building the binaries; waiting\n")
			waiting = true
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Second) }
