// Command sitegrid-ipam is a CNI IPAM plugin: host-local, except that a pod
// gets back its address after its node rebooted (internal/cni/stickyipam).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/sitegrid/sitegrid/internal/cni/stickyipam"
)

func main() {
	env := stickyipam.EnvFromOS()
	if env.Command == "VERSION" {
		fmt.Println(`{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}`)
		return
	}
	netconf, err := io.ReadAll(os.Stdin)
	if err == nil {
		err = stickyipam.Run(env, netconf, os.Stdout)
	}
	if err != nil {
		// A CNI error result on stdout, as the spec asks.
		_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"cniVersion": "1.0.0", "code": 999, "msg": err.Error()})
		os.Exit(1)
	}
}
