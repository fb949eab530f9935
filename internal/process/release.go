package process

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ReleaseCodePages drops this process's mappings of its own executable's
// read-only pages (code and constant data), as the kernel would under
// memory pressure: they stay in the page cache, and a page the process
// touches again comes back with a minor fault. A Go binary that links a
// large library (client-go's typed clients) touches most of it once, in
// its init functions, and then runs in a fraction: this hands the rest
// back. Writable mappings are never touched (their pages are the process's
// own).
func ReleaseCodePages() error {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || strings.Contains(fields[1], "w") {
			continue
		}
		from, to, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(from, 16, 64)
		end, err2 := strconv.ParseUint(to, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED); errno != 0 {
			return fmt.Errorf("madvise %s: %w", fields[0], errno)
		}
	}
	return sc.Err()
}
