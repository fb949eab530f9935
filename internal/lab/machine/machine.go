// Package machine is what a real lab node has of a machine on a host it
// shares with other nodes: a cgroup root of its own (its kubelet's
// cgroupRoot), its processes (everything in its network namespace or its
// cgroups), the mounts its runtime makes under its folder, and the
// host-wide kernel settings a kubelet changes. A power cycle (`lab reboot`)
// is Kill then Unmount; a node removed is that plus RemoveCgroups.
//
// Needs root; cgroup v1 hierarchies, cgroup v2 or both (hybrid).
package machine

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupFS is where the host mounts its cgroup hierarchies.
const cgroupFS = "/sys/fs/cgroup"

// CgroupRoot is the cgroup a node's kubelet puts its pods under: unique
// per lab and node on the machine.
func CgroupRoot(workdir, node string) string { return cgroupPrefix(workdir) + node }

func cgroupPrefix(workdir string) string {
	abs, err := filepath.Abs(workdir)
	if err != nil {
		abs = workdir
	}
	sum := sha256.Sum256([]byte(abs))
	return "/sitegrid-" + hex.EncodeToString(sum[:3]) + "-"
}

// CgroupRoots lists the cgroup roots of the lab in workdir that exist on
// the host: what a killed lab's nodes left.
func CgroupRoots(workdir string) ([]string, error) {
	hs, err := hierarchies()
	if err != nil {
		return nil, err
	}
	prefix := cgroupPrefix(workdir)
	seen := map[string]bool{}
	var out []string
	for _, h := range hs {
		entries, err := os.ReadDir(h)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if root := "/" + e.Name(); e.IsDir() && strings.HasPrefix(root, prefix) && !seen[root] {
				seen[root] = true
				out = append(out, root)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// hierarchies lists the host's cgroup mount points: one per v1 hierarchy,
// and the v2 one.
func hierarchies() ([]string, error) {
	mounts, err := mountTable()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		if (m.fstype == "cgroup" || m.fstype == "cgroup2") && strings.HasPrefix(m.point, cgroupFS) {
			out = append(out, m.point)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no cgroup hierarchy mounted under %s", cgroupFS)
	}
	return out, nil
}

// mountTable reads this process's mounts, in mount order.
func mountTable() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m, ok := parseMountInfo(sc.Text()); ok {
			out = append(out, m)
		}
	}
	return out, sc.Err()
}

// EnsureCgroups creates root in every hierarchy, as a kubelet's cgroupRoot
// must exist before it starts; a cpuset cgroup gets its parent's CPUs and
// memory nodes (a new one has none, and nothing could run in it).
func EnsureCgroups(root string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		dir := filepath.Join(h, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
			parent, err := os.ReadFile(filepath.Join(h, file))
			if err != nil {
				continue // not the cpuset hierarchy
			}
			if err := os.WriteFile(filepath.Join(dir, file), parent, 0o644); err != nil {
				return fmt.Errorf("cgroup %s: %w", filepath.Join(dir, file), err)
			}
		}
	}
	return nil
}

// RemoveCgroups removes root and every cgroup under it from every
// hierarchy; their processes must be gone (Kill).
func RemoveCgroups(root string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		dirs, err := cgroupTree(filepath.Join(h, root))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Children first.
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// cgroupTree is dir and every cgroup below it, parents before children;
// nothing when dir does not exist.
func cgroupTree(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// Processes lists the processes of a node: those in the network namespace
// at netnsPath (its daemons and the runtime's shims, which a namespace
// keeps however they daemonize) and those in its cgroups (its containers,
// which have network namespaces of their own).
func Processes(netnsPath, cgroupRoot string) ([]int, error) {
	var target uint64
	if netnsPath != "" {
		var st syscall.Stat_t
		if err := syscall.Stat(netnsPath, &st); err == nil {
			target = st.Ino
		}
	}
	pids := map[int]bool{}
	if target != 0 {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return nil, err
		}
		self := os.Getpid()
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			var st syscall.Stat_t
			if syscall.Stat(filepath.Join("/proc", e.Name(), "ns", "net"), &st) == nil && st.Ino == target {
				pids[pid] = true
			}
		}
	}
	if cgroupRoot != "" {
		hs, err := hierarchies()
		if err != nil {
			return nil, err
		}
		for _, h := range hs {
			dirs, err := cgroupTree(filepath.Join(h, cgroupRoot))
			if err != nil {
				return nil, err
			}
			for _, d := range dirs {
				data, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
				if err != nil {
					continue
				}
				for _, f := range strings.Fields(string(data)) {
					if pid, err := strconv.Atoi(f); err == nil {
						pids[pid] = true
					}
				}
			}
		}
	}
	out := make([]int, 0, len(pids))
	for pid := range pids {
		out = append(out, pid)
	}
	sort.Ints(out)
	return out, nil
}

// Kill ends every process of the node with SIGKILL, as a power cut would,
// and waits (until ctx ends) until none is left. New ones forked meanwhile
// (a shim starting a container) are killed in the next round.
func Kill(ctx context.Context, netnsPath, cgroupRoot string) error {
	for {
		pids, err := Processes(netnsPath, cgroupRoot)
		if err != nil {
			return err
		}
		alive := 0
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err == nil && !zombie(pid) {
				alive++
			}
		}
		if alive == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes %v of the node outlived SIGKILL: %w", pids, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// zombie reports whether pid has exited and waits only for its parent.
func zombie(pid int) bool {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true // gone
	}
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

// Mounts lists the mount points at or under dir, deepest first.
func Mounts(dir string) ([]string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	mounts, err := mountTable()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		if m.point == abs || strings.HasPrefix(m.point, abs+"/") {
			out = append(out, m.point)
		}
	}
	// Later mounts may sit on earlier ones: undo them in reverse, and a
	// deeper path before its parent.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out, nil
}

// Unmount detaches every mount at or under dir (a rebooted machine has
// none of its runtime's mounts), so its files can be removed.
func Unmount(dir string) error {
	mounts, err := Mounts(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

type mountInfo struct{ point, fstype string }

// parseMountInfo reads one line of /proc/self/mountinfo: field 5 is the
// mount point (octal escapes for spaces), the file system type follows "-".
func parseMountInfo(line string) (mountInfo, bool) {
	f := strings.Fields(line)
	if len(f) < 7 {
		return mountInfo{}, false
	}
	m := mountInfo{point: unescape(f[4])}
	for i := 5; i < len(f)-1; i++ {
		if f[i] == "-" {
			m.fstype = f[i+1]
			return m, true
		}
	}
	return mountInfo{}, false
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
