// Package process starts and stops the long-running child processes of the
// lab and the test harness (etcd, kube-apiserver, kwok, ...).
//
// Children never outlive their parent: each is started with a parent-death
// signal, so a test binary that panics, times out or is killed takes its
// control plane with it. Children run in their own process group, so a
// Ctrl-C on the terminal reaches only the parent, which then stops them in
// order.
package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec describes one child process.
type Spec struct {
	// Name is a short label used in errors, such as "kube-apiserver".
	Name string
	// Path is the binary to run.
	Path string
	Args []string
	// Env, when not nil, is added to the parent's environment.
	Env []string
	// LogFile receives stdout and stderr. Required.
	LogFile string
	// Dir is the working directory; empty means the parent's.
	Dir string
}

// Process is a running child.
type Process struct {
	Spec Spec
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  *os.File
}

// The parent-death signal fires when the thread that forked the child exits,
// not the process. Go may retire threads, so all children are forked from one
// goroutine locked to a thread that lives as long as the process.
var (
	spawnOnce sync.Once
	spawnReqs chan spawnRequest
)

type spawnRequest struct {
	cmd    *exec.Cmd
	result chan error
}

func spawner() {
	runtime.LockOSThread() // never unlocked: this thread must not exit
	for req := range spawnReqs {
		req.result <- req.cmd.Start()
	}
}

func startOnLockedThread(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnRequest)
		go spawner()
	})
	res := make(chan error, 1)
	spawnReqs <- spawnRequest{cmd: cmd, result: res}
	return <-res
}

// Start runs the child described by spec.
func Start(spec Spec) (*Process, error) {
	if spec.LogFile == "" {
		return nil, fmt.Errorf("%s: no log file given", spec.Name)
	}
	logf, err := os.OpenFile(spec.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: open log: %w", spec.Name, err)
	}
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = spec.Dir
	if spec.Env != nil {
		cmd.Env = append(os.Environ(), spec.Env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startOnLockedThread(cmd); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	p := &Process{Spec: spec, cmd: cmd, done: make(chan struct{}), log: logf}
	go func() {
		p.err = cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	return p, nil
}

// PID returns the child's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the child has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the child has exited, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop asks the child to exit with SIGTERM and kills its whole process group
// if it has not exited within grace. It returns once the child is gone.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	// Anything the child itself forked into its group goes too.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// Kill ends the child and its process group with SIGKILL at once, as a
// power cut would, and returns once it is gone.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// WaitReady polls check until it succeeds, the child exits, or ctx ends.
// The error names the child and the last failure, so a user can see why.
func (p *Process) WaitReady(ctx context.Context, interval time.Duration, check func(context.Context) error) error {
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v); see %s", p.Spec.Name, p.err, p.Spec.LogFile)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last check: %v); see %s", p.Spec.Name, ctx.Err(), last, p.Spec.LogFile)
		case <-time.After(interval):
		}
	}
}

// Alive reports whether a process with the given pid exists and has not
// exited (a zombie waiting for its parent to reap it counts as exited). It is
// used for processes started by another invocation, such as a detached lab.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	return !zombie(pid)
}

func zombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state letter follows the parenthesised command name.
	if i := bytes.LastIndexByte(data, ')'); i >= 0 && i+2 < len(data) {
		return data[i+2] == 'Z'
	}
	return false
}

// LogTail returns the last n lines of a process's log, for error messages
// that outlive the log file.
func LogTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// HTTPReady is a WaitReady check: GET url answers 200. A nil client is a
// plain one with a 2 s timeout.
func HTTPReady(hc *http.Client, url string) func(context.Context) error {
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Second}
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s: %s", url, resp.Status, body)
		}
		return nil
	}
}
