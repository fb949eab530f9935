// Package netns gives a lab node its own network namespace, the node's
// "host network": its loopback, which also holds the node's address (the
// lab's nodes have no wire between them; a dummy interface needs a kernel
// module that is not everywhere).
// Programs that change a node's networking (kube-proxy's iptables rules)
// run inside it, so each simulated node has its own rules, as on a real
// machine. Sockets are opened inside a namespace from a thread that enters it
// and leaves again; the sockets stay in the namespace.
//
// Namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the `ip`
// command (iproute2).
package netns

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// runDir is where `ip netns` keeps named namespaces.
const runDir = "/run/netns"

// Available reports why namespaces cannot be made here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("network namespaces need the ip command (Debian package iproute2)")
	}
	return nil
}

// Name is the namespace name of a node of the lab in workdir: unique per
// lab on the machine, recognisable in `ip netns list`.
func Name(workdir, node string) string { return prefix(workdir) + node }

func prefix(workdir string) string {
	abs, err := filepath.Abs(workdir)
	if err != nil {
		abs = workdir
	}
	sum := sha256.Sum256([]byte(abs))
	return "sitegrid-" + hex.EncodeToString(sum[:3]) + "-"
}

// List names the namespaces of the lab in workdir.
func List(workdir string) ([]string, error) {
	entries, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix(workdir)) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// DeleteAll removes every namespace of the lab in workdir: what a lab that
// was killed left behind.
func DeleteAll(ctx context.Context, workdir string) error {
	names, err := List(workdir)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		errs = append(errs, Delete(ctx, name))
	}
	return errors.Join(errs...)
}

// Create makes the namespace name with loopback up, holding 127.0.0.1 and,
// unless ip is nil, ip (a real node's address is on its LAN instead:
// internal/lab/sitenet). A namespace of that name left by a killed lab is
// replaced.
func Create(ctx context.Context, name string, ip net.IP) error {
	_ = Delete(ctx, name)
	steps := [][]string{
		{"netns", "add", name},
		{"-n", name, "link", "set", "lo", "up"},
	}
	if ip != nil {
		steps = append(steps, []string{"-n", name, "addr", "add", ip.String() + "/32", "dev", "lo"})
	}
	for _, args := range steps {
		if err := IP(ctx, args...); err != nil {
			_ = Delete(context.Background(), name)
			return err
		}
	}
	return nil
}

// Path is the namespace's file, what nsenter --net= and setns take.
func Path(name string) string { return filepath.Join(runDir, name) }

// Exists reports whether the namespace is there.
func Exists(name string) bool {
	_, err := os.Stat(Path(name))
	return err == nil
}

// Delete removes the namespace; everything in it (interfaces, rules) goes
// with its last process.
func Delete(ctx context.Context, name string) error {
	if !Exists(name) {
		return nil
	}
	return IP(ctx, "netns", "delete", name)
}

// Command runs a program inside the namespace.
func Command(ctx context.Context, name, program string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", CommandArgs(name, program, args...)...)
}

// CommandArgs is Command's argument list for the ip program, for callers
// that start processes their own way.
func CommandArgs(name, program string, args ...string) []string {
	return append([]string{"netns", "exec", name, program}, args...)
}

// Listen opens a TCP listener on addr inside the namespace.
func Listen(name, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inside(name, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// Dial connects from inside the namespace to addr.
func Dial(ctx context.Context, name, addr string) (net.Conn, error) {
	var c net.Conn
	err := inside(name, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// inside runs fn on an OS thread that has entered the namespace. The thread
// goes back to its own namespace afterwards; if it cannot, it is not
// unlocked, so Go ends it with the goroutine instead of reusing it.
func inside(name string, fn func() error) error {
	target, err := os.Open(Path(name))
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer own.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave network namespace %s: %w", name, err))
			return // the thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// IP runs the ip command (iproute2); its error carries ip's output.
func IP(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
