package machine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sitegrid/sitegrid/internal/atomicfile"
)

// KubeletSysctls are the host-wide kernel settings a kubelet sets at start
// (its container manager's kernel tunables): not per network namespace, so
// every node's kubelet changes the host's. The lab records them before the
// first real node starts and puts them back after the last one.
var KubeletSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

const procSys = "/proc/sys"

// SaveSysctls records the current values of KubeletSysctls in file, unless
// file already holds a record: that one was taken before any kubelet ran
// (by a lab that was killed since), and it is what must come back.
func SaveSysctls(file string) error {
	if _, err := os.Stat(file); err == nil {
		return nil
	}
	values := map[string]string{}
	for _, key := range KubeletSysctls {
		v, err := os.ReadFile(filepath.Join(procSys, key))
		if err != nil {
			return fmt.Errorf("read sysctl %s: %w", key, err)
		}
		values[key] = strings.TrimSpace(string(v))
	}
	return atomicfile.WriteJSON(file, values, 0o600)
}

// RestoreSysctls writes back what SaveSysctls recorded and removes file;
// without a file there is nothing to restore.
func RestoreSysctls(file string) error {
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var values map[string]string
	if err := json.Unmarshal(data, &values); err != nil {
		return fmt.Errorf("%s is damaged: %w", file, err)
	}
	var errs []error
	for _, key := range KubeletSysctls {
		v, ok := values[key]
		if !ok {
			continue
		}
		if err := os.WriteFile(filepath.Join(procSys, key), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", key, v, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return os.Remove(file)
}
