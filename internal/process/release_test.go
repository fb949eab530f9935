package process

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// exeMappings reads /proc/self/smaps: the resident KiB of this process's
// read-only mappings of its executable, and whether each is marked for
// random reads (VmFlags rr).
func exeMappings(t *testing.T) (rssKiB int, allRandom bool) {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	allRandom = true
	mine, seen := false, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			mine = len(fields) >= 6 && fields[5] == exe && !strings.Contains(fields[1], "w")
			if mine {
				seen++
			}
		case mine && fields[0] == "Rss:":
			n, _ := strconv.Atoi(fields[1])
			rssKiB += n
		case mine && fields[0] == "VmFlags:":
			allRandom = allRandom && strings.Contains(sc.Text(), " rr")
		}
	}
	if seen == 0 {
		t.Fatal("no read-only mapping of the executable in /proc/self/smaps")
	}
	return rssKiB, allRandom
}

// cachedPages counts the executable's pages in the page cache, through a
// mapping of its own (mincore).
func cachedPages(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(data) //nolint:errcheck // a test's read-only mapping
	vec := make([]byte, (len(data)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&data[0])), uintptr(len(data)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

func TestReleaseCodePages(t *testing.T) {
	// A test binary was just linked: its pages are written back first, as
	// an installed binary's are (the page cache drops only clean pages).
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if err := exe.Sync(); err != nil {
		t.Fatal(err)
	}
	exe.Close()
	before, _ := exeMappings(t)
	cachedBefore := cachedPages(t)
	if err := ReleaseCodePages(); err != nil {
		t.Fatal(err)
	}
	after, random := exeMappings(t)
	// The pages no process maps left the page cache, so a fault brings
	// back the page touched, not the cached pages around it.
	if cachedAfter := cachedPages(t); cachedAfter >= cachedBefore {
		t.Errorf("the executable's pages in the page cache went from %d to %d, want fewer", cachedBefore, cachedAfter)
	}
	if after >= before {
		t.Errorf("the executable's resident read-only pages went from %d to %d KiB, want fewer", before, after)
	}
	if !random {
		t.Error("a read-only mapping of the executable is not marked for random reads (MADV_RANDOM)")
	}
	// The process runs on: its code comes back as it is touched.
	if _, err := Status(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}
