package containerd

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sitegrid/sitegrid/internal/lab/images"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestLabImagesRunInContainerd builds the lab's images, imports them into
// a containerd of its own, and runs them with runc: busybox's shell and
// wget, and the echoserver answering with its pod information.
func TestLabImagesRunInContainerd(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("needs root, containerd, ctr, runc and the CNI plugins (CI installs them): %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	archives, err := images.BuildLab(ctx, testenv.RepoRoot(t), filepath.Join(dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: filepath.Join(dir, "containerd"), SandboxImage: images.Pause, CNIConfDir: filepath.Join(dir, "cni"), CNIBinDir: CNIBinDir}
	p, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	for _, a := range archives {
		refs, err := Import(ctx, cfg.Socket(), a.Path)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(refs, a.Ref) {
			t.Errorf("importing %s gave %v, want %s", a.Path, refs, a.Ref)
		}
	}
	have, err := Images(ctx, cfg.Socket())
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{images.Pause, images.Echoserver, images.Busybox} {
		if !slices.Contains(have, ref) {
			t.Errorf("containerd lists %v, lacks %s", have, ref)
		}
	}
	if _, err := Import(ctx, cfg.Socket(), filepath.Join(dir, "missing.tar")); err == nil {
		t.Errorf("importing a missing file succeeded")
	}

	run := func(name string, args ...string) *exec.Cmd {
		return exec.Command("ctr", append([]string{"--address", cfg.Socket(), "-n", Namespace, "run", "--rm", "--net-host"}, append([]string{args[0], name}, args[1:]...)...)...)
	}
	out, err := run("busybox-test", images.Busybox, "/bin/sh", "-c", "echo from $(busybox | head -1 | cut -d' ' -f1); readlink /usr/bin/wget; readlink /usr/bin/nslookup").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "from BusyBox") || strings.Count(string(out), "/bin/busybox") != 2 {
		t.Fatalf("busybox: %v\n%s", err, out)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	echo := run("echo-test", images.Echoserver, "/echoserver", "--listen", addr)
	echo.Args = slices.Insert(echo.Args, slices.Index(echo.Args, "--net-host"), "--env", "NODE_NAME=node-a", "--env", "POD_NAME=echo-1")
	var echoLog strings.Builder
	echo.Stdout, echo.Stderr = &echoLog, &echoLog
	if err := echo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = exec.Command("ctr", "--address", cfg.Socket(), "-n", Namespace, "tasks", "kill", "-s", "SIGKILL", "echo-test").Run()
		_ = echo.Wait()
	})
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return fmt.Errorf("%v (ctr run: %s)", err, echoLog.String())
		}
		defer resp.Body.Close()
		page, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(page), "node name:\tnode-a") || !strings.Contains(string(page), "pod name:\techo-1") {
			return fmt.Errorf("page lacks the pod information:\n%s", page)
		}
		return nil
	})
}

func TestSocketPathTooLongIsRefused(t *testing.T) {
	short := Config{Dir: "/tmp/lab/nodes/a/containerd", SandboxImage: images.Pause}
	if err := short.CheckSocket(); err != nil {
		t.Errorf("a short folder: %v", err)
	}
	long := Config{Dir: "/tmp/" + strings.Repeat("w", 80) + "/containerd", SandboxImage: images.Pause}
	err := long.CheckSocket()
	if err == nil || !strings.Contains(err.Error(), "--workdir") {
		t.Errorf("a folder whose socket is too long: %v, want a refusal naming --workdir", err)
	}
	if _, err := Start(context.Background(), long); err == nil {
		t.Error("Start accepted a folder whose socket is too long")
	}
}
