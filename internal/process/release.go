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
// read-only pages (code, constant data and the function tables), as the
// kernel would under memory pressure. A Go binary that links a large
// library (client-go's typed clients) touches most of it once, in its init
// functions, and then runs in a fraction: this hands the rest back.
//
// A page touched again faults back in, and the kernel maps with it the
// pages around it (64 KiB) that are in the page cache: the collector's
// scans touch the function tables all over, so dropped mappings alone grew
// back to twice the pages used. So the executable's pages no process maps
// are also dropped from the page cache (POSIX_FADV_DONTNEED), and the
// mappings marked MADV_RANDOM (a fault reads the page, not the pages after
// it): a page comes back alone, from the disk. Writable mappings are never
// touched (their pages are the process's own).
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
		for _, advice := range []int{unix.MADV_RANDOM, unix.MADV_DONTNEED} {
			if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), uintptr(advice)); errno != 0 {
				return fmt.Errorf("madvise %s: %w", fields[0], errno)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	ef, err := os.Open(exe)
	if err != nil {
		return err
	}
	defer ef.Close()
	if err := unix.Fadvise(int(ef.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise %s: %w", exe, err)
	}
	return nil
}
