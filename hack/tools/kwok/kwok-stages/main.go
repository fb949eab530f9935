// Command kwok-stages prints kwok's default node and pod stages, from the
// pinned kwok release, as one multi-document YAML for `kwok --config`.
// Nodes keep a Lease like a real kubelet, so a stopped kwok makes its nodes
// go NotReady through the node lifecycle controller.
package main

import (
	"fmt"
	"strings"

	nodefast "sigs.k8s.io/kwok/kustomize/stage/node/fast"
	nodelease "sigs.k8s.io/kwok/kustomize/stage/node/heartbeat-with-lease"
	podfast "sigs.k8s.io/kwok/kustomize/stage/pod/fast"
)

func main() {
	docs := []string{
		nodefast.DefaultNodeInit,
		nodelease.DefaultNodeHeartbeatWithLease,
		podfast.DefaultPodReady,
		podfast.DefaultPodComplete,
		podfast.DefaultPodDelete,
	}
	for i := range docs {
		docs[i] = strings.TrimSpace(docs[i])
	}
	fmt.Println(strings.Join(docs, "\n---\n"))
}
