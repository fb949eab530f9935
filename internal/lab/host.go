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
	errs = append(errs, containerd.RemoveStaleShimSockets(), removeCNIResults(cniNetwork(workdir)))
	errs = append(errs, netns.DeleteAll(ctx, workdir))
	errs = append(errs, machine.RestoreSysctls(filepath.Join(workdir, sysctlsFile)))
	return errors.Join(errs...)
}

func removeCNIResults(network string) error {
	entries, err := os.ReadDir(cniResults)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), network+"-") {
			errs = append(errs, os.Remove(filepath.Join(cniResults, e.Name())))
		}
	}
	return errors.Join(errs...)
}
