package join

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	manifests "github.com/sitegrid/sitegrid/config"
	"github.com/sitegrid/sitegrid/internal/hub/config"
	"github.com/sitegrid/sitegrid/internal/process"
)

// The hub as systemd runs it (config/hub/sitegrid-hub.service).
const (
	hubUnit   = "sitegrid-hub.service"
	unitPath  = "/etc/systemd/system/" + hubUnit
	hubBinary = "/usr/local/bin/sitegrid-hub"
)

// unit is config/hub/sitegrid-hub.service with its paths under the root
// (the same file when the root is /).
func (l layout) unit() []byte {
	u := string(manifests.HubUnit)
	for _, p := range []string{hubBinary, "/etc/sitegrid/hub.yaml", "/var/lib/sitegrid-hub"} {
		u = strings.ReplaceAll(u, p, l.path(p))
	}
	return []byte(u)
}

// installSystemd installs this binary and the hub's unit, starts the hub,
// waits until it answers, then restarts units (the kubelet's, kube-proxy's)
// so they reconnect through it.
func installSystemd(ctx context.Context, l layout, rec *record, cfg config.HubConfiguration, units []string, out io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if exe != l.path(hubBinary) {
		bin, err := os.ReadFile(exe)
		if err != nil {
			return err
		}
		if err := rec.create(l.path(hubBinary), bin, 0o755); err != nil {
			return err
		}
	}
	if err := rec.create(l.path(unitPath), l.unit(), 0o644); err != nil {
		return err
	}
	if err := systemctl(ctx, "daemon-reload"); err != nil {
		return err
	}
	if err := systemctl(ctx, "enable", "--now", hubUnit); err != nil {
		return err
	}
	rec.Units = append(rec.Units, hubUnit)
	fmt.Fprintf(out, "[init] %s enabled and started\n", hubUnit)
	if err := waitReady(ctx, "http://"+cfg.HealthAddress+"/readyz"); err != nil {
		return fmt.Errorf("%s did not become ready (journalctl -u %s): %w", hubUnit, hubUnit, err)
	}
	rec.RestartUnits = units
	return restartUnits(ctx, units, out)
}

// stopSystemd stops and disables the hub before its files go.
func stopSystemd(ctx context.Context, rec *record, out io.Writer) error {
	for _, u := range rec.Units {
		if err := systemctl(ctx, "disable", "--now", u); err != nil {
			return err
		}
		fmt.Fprintf(out, "[init] %s stopped and disabled\n", u)
	}
	return nil
}

func restartUnits(ctx context.Context, units []string, out io.Writer) error {
	if err := systemctl(ctx, "daemon-reload"); err != nil {
		return err
	}
	for _, u := range units {
		if err := systemctl(ctx, "restart", u); err != nil {
			return err
		}
		fmt.Fprintf(out, "[init] %s restarted\n", u)
	}
	return nil
}

func systemctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// waitReady polls url until it answers 200, a minute at most.
func waitReady(ctx context.Context, url string) error {
	ready := process.HTTPReady(nil, url)
	return wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		return ready(ctx) == nil, nil
	})
}
