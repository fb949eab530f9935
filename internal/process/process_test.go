package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// When this variable is set, the test binary acts as a parent that starts a
// child through Start, prints the child's pid and waits to be killed.
const parentEnv = "SITEGRID_PROCESS_TEST_PARENT"

func TestMain(m *testing.M) {
	if dir := os.Getenv(parentEnv); dir != "" {
		p, err := Start(Spec{Name: "sleep", Path: "/bin/sleep", Args: []string{"600"}, LogFile: filepath.Join(dir, "sleep.log")})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(p.PID())
		select {}
	}
	os.Exit(m.Run())
}

// TestChildDiesWithKilledParent: a parent killed with SIGKILL (a test timeout
// or an interrupted run) takes its children with it.
func TestChildDiesWithKilledParent(t *testing.T) {
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), parentEnv+"="+t.TempDir())
	stdout, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("parent said %q", line)
	}
	if !Alive(child) {
		t.Fatalf("child %d not running", child)
	}
	_ = parent.Process.Kill()
	_ = parent.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for Alive(child) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if Alive(child) {
		_ = syscall.Kill(child, syscall.SIGKILL)
		t.Fatalf("child %d outlived its killed parent", child)
	}
}

// TestStopEscalates: a child that ignores SIGTERM is killed after the grace
// period.
func TestStopEscalates(t *testing.T) {
	p, err := Start(Spec{Name: "stubborn", Path: "/bin/sh", Args: []string{"-c", "trap '' TERM; sleep 600 & wait"},
		LogFile: filepath.Join(t.TempDir(), "log")})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the shell install its trap
	p.Stop(200 * time.Millisecond)
	if done, _ := p.Exited(); !done {
		t.Fatal("Stop returned before the child exited")
	}
}

func TestWaitReadyReportsEarlyExit(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	p, err := Start(Spec{Name: "crasher", Path: "/bin/sh", Args: []string{"-c", "exit 3"}, LogFile: log})
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitReady(t.Context(), 10*time.Millisecond, func(context.Context) error { return errors.New("not yet") })
	if err == nil || !strings.Contains(err.Error(), "crasher exited") || !strings.Contains(err.Error(), log) {
		t.Fatalf("got %v, want an error naming the exited process and its log", err)
	}
}
