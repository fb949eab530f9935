package images

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/sitegrid/sitegrid/internal/gobuild"
)

// The lab's images, imported into every real node.
const (
	// Pause is the sandbox image of every pod.
	Pause = "sitegrid.local/pause:v1"
	// Echoserver answers HTTP on 8080 like the Kubernetes e2e echoserver.
	Echoserver = "sitegrid.local/echoserver:v1"
	// Busybox has a shell, nslookup and wget, from Debian's busybox-static.
	Busybox = "sitegrid.local/busybox:v1"
)

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// Archive is a built image's tarball.
type Archive struct {
	Ref  string
	Path string
}

// BuildLab writes the lab's three images into dir, building the Go
// programs of images/ in the checkout at repoRoot.
func BuildLab(ctx context.Context, repoRoot, dir string) ([]Archive, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Both programs in one build; each is named after its package.
	programs := []struct{ ref, bin string }{{Pause, "pause"}, {Echoserver, "echoserver"}}
	bins, err := os.MkdirTemp(dir, "bin-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(bins)
	pkgs := make([]string, len(programs))
	for i, p := range programs {
		pkgs[i] = "./images/" + p.bin
	}
	cmd := gobuild.Command(ctx, bins+string(os.PathSeparator), pkgs...)
	cmd.Dir = repoRoot
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s: %v\n%s", strings.Join(pkgs, " "), err, msg)
	}
	var out []Archive
	for _, p := range programs {
		data, err := os.ReadFile(filepath.Join(bins, p.bin))
		if err != nil {
			return nil, err
		}
		img := Image{Ref: p.ref, Entrypoint: []string{"/" + p.bin}, Files: []File{{Path: p.bin, Mode: 0o755, Data: data}}}
		if p.ref == Echoserver {
			img.ExposedPorts = []string{"8080/tcp"}
		}
		a, err := writeFile(dir, img)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	bb, err := BusyboxImage(ctx, BusyboxPath)
	if err != nil {
		return nil, err
	}
	a, err := writeFile(dir, bb)
	if err != nil {
		return nil, err
	}
	return append(out, a), nil
}

// BusyboxImage packs a static busybox binary with a link for each of its
// applets where it would install them (busybox --list-full).
func BusyboxImage(ctx context.Context, bin string) (Image, error) {
	if err := checkStatic(bin); err != nil {
		return Image{}, err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return Image{}, err
	}
	list, err := exec.CommandContext(ctx, bin, "--list-full").Output()
	if err != nil {
		return Image{}, fmt.Errorf("%s --list-full: %w", bin, err)
	}
	img := Image{Ref: Busybox, Entrypoint: []string{"/bin/sh"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: []File{{Path: "bin/busybox", Mode: 0o755, Data: data}}}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "bin/busybox" {
			continue
		}
		img.Files = append(img.Files, File{Path: applet, Link: "/bin/busybox"})
	}
	return img, nil
}

// checkStatic refuses a binary that needs a dynamic loader: the image has
// no C library.
func checkStatic(bin string) error {
	f, err := elf.Open(bin)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s not found: install Debian's busybox-static", bin)
	} else if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is linked dynamically: install Debian's busybox-static, not busybox", bin)
		}
	}
	return nil
}

func writeFile(dir string, img Image) (Archive, error) {
	var buf bytes.Buffer
	if err := WriteArchive(&buf, img); err != nil {
		return Archive{}, err
	}
	name := strings.NewReplacer("/", "_", ":", "_").Replace(img.Ref) + ".tar"
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		return Archive{}, err
	}
	return Archive{Ref: img.Ref, Path: p}, nil
}
