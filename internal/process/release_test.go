package process

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
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

func TestReleaseCodePages(t *testing.T) {
	before, _ := exeMappings(t)
	if err := ReleaseCodePages(); err != nil {
		t.Fatal(err)
	}
	after, random := exeMappings(t)
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
