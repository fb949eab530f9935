package process

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ResidentByFile sums the resident memory of a process's file mappings per
// file, in bytes, from /proc/PID/smaps (Linux).
func ResidentByFile(pid int) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	file := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			file = ""
			if len(fields) >= 6 {
				file = fields[5]
			}
		case len(fields) == 3 && fields[0] == "Rss:" && file != "":
			if n, err := strconv.ParseInt(fields[1], 10, 64); err == nil {
				out[file] += n * 1024
			}
		}
	}
	return out, sc.Err()
}
