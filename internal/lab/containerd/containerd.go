// Package containerd runs one containerd per real lab node (two kubelets
// sharing one would garbage-collect each other's containers) and imports
// the lab's images into it. containerd and ctr come from Debian's
// containerd package, runc from runc.
package containerd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sitegrid/sitegrid/internal/process"
)

// Namespace is the containerd namespace the kubelet's CRI uses.
const Namespace = "k8s.io"

// CNIBinDir is where Debian's containernetworking-plugins installs the CNI
// plugins pods are networked with.
const CNIBinDir = "/usr/lib/cni"

// Available reports why containerd cannot run here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("containerd needs root")
	}
	for _, p := range []struct{ bin, pkg string }{{"containerd", "containerd"}, {"ctr", "containerd"}, {"runc", "runc"}} {
		if _, err := exec.LookPath(p.bin); err != nil {
			return fmt.Errorf("%s not found (Debian package %s)", p.bin, p.pkg)
		}
	}
	if _, err := os.Stat(filepath.Join(CNIBinDir, "bridge")); err != nil {
		return fmt.Errorf("no CNI plugins in %s (Debian package containernetworking-plugins)", CNIBinDir)
	}
	return nil
}

// Config is one node's containerd.
type Config struct {
	// Dir holds the node's containerd: its root (images, snapshots: the
	// node's disk), state and sockets.
	Dir string
	// SandboxImage is every pod's pause image.
	SandboxImage string
	// CNIConfDir and CNIBinDir are where the CRI finds pod networking.
	CNIConfDir, CNIBinDir string
	// Netns, when set, is the network namespace (its file) containerd runs
	// in: the node's, where the CNI plugins then put pods' interfaces.
	Netns string
}

// maxSocketPath is the longest socket path containerd listens on.
const maxSocketPath = 104

// CheckSocket refuses a Dir whose sockets containerd could not listen on
// (paths longer than 104 bytes).
func (c Config) CheckSocket() error {
	if ttrpc := c.Socket() + ".ttrpc"; len(ttrpc) > maxSocketPath {
		return fmt.Errorf("containerd's socket %s would be %d bytes long, more than the %d containerd accepts: use a shorter --workdir", ttrpc, len(ttrpc), maxSocketPath)
	}
	return nil
}

// Socket is the gRPC socket kubelet and ctr talk to.
func (c Config) Socket() string { return filepath.Join(c.Dir, "containerd.sock") }

// Root is what survives a reboot: images, snapshots, container metadata.
func (c Config) Root() string { return filepath.Join(c.Dir, "root") }

// State is what a reboot loses (it would be on tmpfs under /run).
func (c Config) State() string { return filepath.Join(c.Dir, "state") }

// toml is containerd's configuration (version 2, containerd 1.6 and 1.7).
// restrict_oom_score_adj: root here may lack CAP_SYS_RESOURCE, and without it
// every sandbox fails to start. Cgroups through cgroupfs, as the kubelet's
// cgroupDriver. What would be under /run on a machine of its own (pods'
// network namespaces, runc's container state) is under State, so a reboot
// drops exactly this node's.
func (c Config) toml() string {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	return strings.Join([]string{
		"version = 2",
		"root = " + q(c.Root()),
		"state = " + q(c.State()),
		"[grpc]",
		"  address = " + q(c.Socket()),
		"[ttrpc]",
		"  address = " + q(c.Socket()+".ttrpc"),
		"[debug]",
		"  level = \"info\"",
		"[metrics]",
		"  address = \"\"",
		`[plugins."io.containerd.internal.v1.opt"]`,
		"  path = " + q(filepath.Join(c.Dir, "opt")),
		`[plugins."io.containerd.grpc.v1.cri"]`,
		"  sandbox_image = " + q(c.SandboxImage),
		"  restrict_oom_score_adj = true",
		"  netns_mounts_under_state_dir = true",
		"  enable_selinux = false",
		`[plugins."io.containerd.grpc.v1.cri".containerd]`,
		`  snapshotter = "overlayfs"`,
		`  default_runtime_name = "runc"`,
		`[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]`,
		`  runtime_type = "io.containerd.runc.v2"`,
		`[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]`,
		"  SystemdCgroup = false",
		"  Root = " + q(filepath.Join(c.State(), "runc")),
		`[plugins."io.containerd.grpc.v1.cri".cni]`,
		"  bin_dir = " + q(c.CNIBinDir),
		"  conf_dir = " + q(c.CNIConfDir),
		"",
	}, "\n")
}

// Start writes the config, starts containerd and waits until it answers on
// its socket.
func Start(ctx context.Context, c Config) (*process.Process, error) {
	if c.Dir == "" || c.SandboxImage == "" {
		return nil, errors.New("containerd: Dir and SandboxImage are required")
	}
	if err := c.CheckSocket(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, err
	}
	cfg := filepath.Join(c.Dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(c.toml()), 0o600); err != nil {
		return nil, err
	}
	// A socket left by a killed containerd would be taken for this one.
	_ = os.Remove(c.Socket())
	spec := process.Spec{Name: "containerd", Path: "containerd", Args: []string{"--config", cfg}, LogFile: filepath.Join(c.Dir, "containerd.log")}
	if c.Netns != "" {
		spec.Path, spec.Args = "nsenter", append([]string{"--net=" + c.Netns, "--", "containerd"}, spec.Args...)
	}
	p, err := process.Start(spec)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := p.WaitReady(wctx, 200*time.Millisecond, func(ctx context.Context) error { return Ping(ctx, c.Socket()) }); err != nil {
		p.Stop(5 * time.Second)
		return nil, fmt.Errorf("containerd did not answer (%w):\n%s", err, process.LogTail(p.Spec.LogFile, 15))
	}
	return p, nil
}

// Ping asks containerd for its version: nil once it serves.
func Ping(ctx context.Context, socket string) error {
	_, err := ctr(ctx, socket, "version")
	return err
}

// Import loads a docker-archive or OCI tarball into the node's CRI
// namespace, and returns the image names it held.
func Import(ctx context.Context, socket, archive string) ([]string, error) {
	if _, err := os.Stat(archive); err != nil {
		return nil, err
	}
	out, err := ctr(ctx, socket, "-n", Namespace, "images", "import", "--all-platforms", archive)
	if err != nil {
		return nil, err
	}
	// ctr prints "unpacking NAME (sha256:...)...done" per image.
	var refs []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "unpacking" {
			refs = append(refs, f[1])
		}
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("%s holds no image ctr could import:\n%s", archive, out)
	}
	return refs, nil
}

// Images lists the image names in the node's CRI namespace.
func Images(ctx context.Context, socket string) ([]string, error) {
	out, err := ctr(ctx, socket, "-n", Namespace, "images", "ls", "-q")
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

func ctr(ctx context.Context, socket string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", socket}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// shimSockets is where containerd 1.6 and 1.7 put their shims' sockets,
// whatever their state directory: shared by every containerd on the host.
const shimSockets = "/run/containerd/s"

// RemoveStaleShimSockets removes the sockets of shims that are gone (a
// node's power cut leaves them); a live shim's socket, of any containerd on
// the host, answers and is kept.
func RemoveStaleShimSockets() error {
	entries, err := os.ReadDir(shimSockets)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(shimSockets, e.Name())
		if e.Type()&os.ModeSocket == 0 {
			continue
		}
		if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
			_ = c.Close()
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
