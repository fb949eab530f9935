package join

import (
	"context"
	"fmt"
	"io"
)

// LeaveOptions of a leave.
type LeaveOptions struct {
	Root string
	Out  io.Writer
}

// Leave undoes the node's join: with systemd it stops and disables the
// hub, restores the kubeconfigs it changed byte for byte, removes what it
// created (the hub's configuration, certificates, cache and unit) and
// restarts the kubelet (and kube-proxy), which talk to the cloud directly
// again.
func Leave(ctx context.Context, o LeaveOptions) error {
	if o.Out == nil {
		o.Out = io.Discard
	}
	l := layout{o.Root}
	rec, err := loadRecord(l.record())
	if err != nil {
		return err
	}
	if rec.Init == InitSystemd {
		if err := stopSystemd(ctx, rec, o.Out); err != nil {
			return err
		}
	}
	if err := rec.undo(); err != nil {
		return err
	}
	for _, c := range rec.Changed {
		fmt.Fprintf(o.Out, "[kubeconfig] %s restored\n", c.Path)
	}
	if rec.Init == InitSystemd {
		return restartUnits(ctx, rec.RestartUnits, o.Out)
	}
	fmt.Fprintln(o.Out, "[init] none: stop the hub, then restart the kubelet and kube-proxy")
	return nil
}
