package lab

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/sitegrid/sitegrid/internal/lab/netns"
)

// Exec runs argv inside a lab node's network namespace, as a user would on
// the node itself: curl of a Service's cluster IP, iptables-save, ip route.
// Only the network is the node's (nsenter --net, so the command sees the
// host's files, as the node's own processes do). The command's exit status
// comes back as an *exec.ExitError.
func Exec(ctx context.Context, workdir, node string, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(argv) == 0 {
		return fmt.Errorf("lab exec %s: no command given (lab exec NODE -- CMD...)", node)
	}
	nodes, err := EdgeNodes(ctx, workdir)
	if err != nil {
		return err
	}
	var names []string
	for _, n := range nodes {
		if n.Name != node {
			names = append(names, n.Name)
			continue
		}
		if n.Netns == "" {
			return fmt.Errorf("node %s has no network namespace of its own: start the lab with --kube-proxy (root)", node)
		}
		cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns.Path(n.Netns), "--"}, argv...)...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
		return cmd.Run()
	}
	return fmt.Errorf("%q is not a lab node; the lab's nodes are %s", node, strings.Join(names, ", "))
}
