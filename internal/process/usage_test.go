package process

import (
	"os"
	"testing"
)

func TestOwnUsage(t *testing.T) {
	st, err := Status(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st["VmRSS"] <= 0 || st["VmHWM"] < st["VmRSS"] {
		t.Errorf("VmRSS %d, VmHWM %d", st["VmRSS"], st["VmHWM"])
	}
	for start := CPUSeconds(os.Getpid()); CPUSeconds(os.Getpid()) == start; {
		// spin until the kernel counts a tick
	}
	if CPUSeconds(-1) != 0 {
		t.Error("a missing process has CPU time")
	}
	if _, err := Status(-1); err == nil {
		t.Error("status of a missing process")
	}
}
