package lab

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sitegrid/sitegrid/internal/lab/containerd"
	"github.com/sitegrid/sitegrid/internal/lab/machine"
	"github.com/sitegrid/sitegrid/internal/lab/netns"
)

// cniResults is the CNI plugins' host-wide cache of pods' results, whose
// files start with the network's name.
const cniResults = "/var/lib/cni/results"

// cleanUpHost puts the host back as it was before the lab in workdir ran
// real nodes or node namespaces, also after the lab was killed (then its
// containers and shims outlived it): every process in the lab's namespaces
// and cgroups is killed, the mounts under workdir are undone, the cgroups,
// namespaces and CNI cache entries removed, and the sysctls kubelets
// changed restored. Without root the lab made none of these.
func cleanUpHost(workdir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	namespaces, err := netns.List(workdir)
	errs = append(errs, err)
	roots, err := machine.CgroupRoots(workdir)
	errs = append(errs, err)
	for _, ns := range namespaces {
		errs = append(errs, machine.Kill(ctx, netns.Path(ns), ""))
	}
	for _, root := range roots {
		errs = append(errs, machine.Kill(ctx, "", root))
	}
	errs = append(errs, machine.Unmount(workdir))
	for _, root := range roots {
		errs = append(errs, machine.RemoveCgroups(root))
	}
	errs = append(errs, containerd.RemoveStaleShimSockets(), removeCNIResults(workdir))
	errs = append(errs, netns.DeleteAll(ctx, workdir))
	errs = append(errs, machine.RestoreSysctls(filepath.Join(workdir, sysctlsFile)))
	return errors.Join(errs...)
}

// removeCNIResults removes the CNI cache entries of the lab's pods: those
// of its pod network, and the runtime's loopback entries of its sandboxes
// (named by sandbox ID, found in the nodes' containerd roots).
func removeCNIResults(workdir string) error {
	entries, err := os.ReadDir(cniResults)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	sandboxes, _ := filepath.Glob(filepath.Join(workdir, controlPlaneDir, "nodes", "*", "containerd", "root", "io.containerd.grpc.v1.cri", "sandboxes", "*"))
	ours := map[string]bool{}
	for _, s := range sandboxes {
		ours[filepath.Base(s)] = true
	}
	network := cniNetwork(workdir)
	var errs []error
	for _, e := range entries {
		name := e.Name()
		id, isLoopback := strings.CutPrefix(strings.TrimSuffix(name, "-lo"), "cni-loopback-")
		if strings.HasPrefix(name, network+"-") || (isLoopback && ours[id]) {
			errs = append(errs, os.Remove(filepath.Join(cniResults, name)))
		}
	}
	return errors.Join(errs...)
}
