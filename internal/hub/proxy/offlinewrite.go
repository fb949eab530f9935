package proxy

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
)

// offlineWrite answers the two writes a kubelet must make to stay healthy
// while the cloud is gone: renewing its node Lease and patching its node's
// status. Both are answered as the apiserver would, and the node's cached
// object takes the patch, so the kubelet reads back what it wrote. Nothing
// is queued for the cloud: once it is back, the kubelet's next renewal and
// status update write the truth (a renewal from the offline answer's
// resourceVersion gets a conflict, and the kubelet re-reads, as it does
// after any conflict). Other writes are refused by the caller.
func (p *Proxy) offlineWrite(w http.ResponseWriter, r *http.Request, identity string) bool {
	if p.cfg.Cache == nil || !strings.HasPrefix(identity, "user:system:node:") {
		return false
	}
	node, _, _ := strings.Cut(strings.TrimPrefix(identity, "user:system:node:"), "|")
	switch {
	case r.Method == http.MethodPut && r.URL.Path == "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"+node:
		return p.renewLease(w, r, identity, node)
	case r.Method == http.MethodPatch && r.URL.Path == "/api/v1/nodes/"+node+"/status":
		return p.patchNodeStatus(w, r, identity, node)
	}
	return false
}

func (p *Proxy) renewLease(w http.ResponseWriter, r *http.Request, identity, node string) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return false
	}
	obj, _, err := offlineCodecs().UniversalDeserializer().Decode(body, nil, nil)
	if err != nil {
		return false
	}
	lease, ok := obj.(*coordinationv1.Lease)
	if !ok || lease.Name != node {
		return false
	}
	lease.APIVersion, lease.Kind = "coordination.k8s.io/v1", "Lease"
	raw, err := json.Marshal(lease)
	if err != nil {
		return false
	}
	// A kubelet restarted offline reads its Lease back from here.
	k := cache.Key{Identity: identity, Verb: cache.VerbGet, Group: "coordination.k8s.io", Version: "v1", Resource: "leases", Namespace: "kube-node-lease", Name: node}
	_ = p.cfg.Cache.PutObject(k, lease.ResourceVersion, raw)
	writeObject(w, r, lease, raw)
	return true
}

func (p *Proxy) patchNodeStatus(w http.ResponseWriter, r *http.Request, identity, node string) bool {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/strategic-merge-patch+json" {
		return false
	}
	patch, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		return false
	}
	k := cache.Key{Identity: identity, Verb: cache.VerbGet, Version: "v1", Resource: "nodes", Name: node}
	rv, current, err := p.cfg.Cache.Object(k)
	if err != nil {
		return false
	}
	patched, err := strategicpatch.StrategicMergePatch(current, patch, &corev1.Node{})
	if err != nil {
		writeStatus(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, "node status patch does not apply to the cached node: "+err.Error())
		return true
	}
	var n corev1.Node
	if err := json.Unmarshal(patched, &n); err != nil {
		return false
	}
	n.ResourceVersion = rv
	raw, err := json.Marshal(&n)
	if err != nil {
		return false
	}
	// Keep both the node's GET answer and the status subresource's.
	_ = p.cfg.Cache.PutObject(k, rv, raw)
	writeObject(w, r, &n, raw)
	return true
}

// writeObject answers with obj in JSON, or in protobuf when the client
// accepts only that.
func writeObject(w http.ResponseWriter, r *http.Request, obj runtime.Object, jsonBody []byte) {
	accept := r.Header.Get("Accept")
	if accept != "" && !strings.Contains(accept, "json") && !strings.Contains(accept, "*/*") && strings.Contains(accept, runtime.ContentTypeProtobuf) {
		if info, ok := runtime.SerializerInfoForMediaType(offlineCodecs().SupportedMediaTypes(), runtime.ContentTypeProtobuf); ok {
			w.Header().Set("Content-Type", runtime.ContentTypeProtobuf)
			w.Header().Set("X-Sitegrid-Hub-Cache", "offline")
			w.WriteHeader(http.StatusOK)
			_ = info.Serializer.Encode(obj, w)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Sitegrid-Hub-Cache", "offline")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(jsonBody)
}

// offlineCodecs decode and encode the two kinds the hub writes offline. A
// scheme of just these, built on the first offline write, keeps the hub from
// registering every API type of the cluster (memory the node would pay for).
var offlineCodecs = sync.OnceValue(func() serializer.CodecFactory {
	s := runtime.NewScheme()
	utilruntime.Must(corev1.AddToScheme(s))
	utilruntime.Must(coordinationv1.AddToScheme(s))
	return serializer.NewCodecFactory(s)
})
