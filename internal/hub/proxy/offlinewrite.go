package proxy

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"sync"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/nodepatch"
)

// The two writes a kubelet must make to stay healthy while the cloud is
// gone, renewing its node Lease and patching its node's status, are
// answered as the apiserver would, and the node's cached object takes the
// patch, so the kubelet reads back what it wrote. Nothing is queued for the
// cloud: once it is back, the kubelet's next renewal and status update
// write the truth (a renewal from the offline answer's resourceVersion gets
// a conflict, and the kubelet re-reads, as it does after any conflict).
// Each returns false when it cannot answer, and the write is refused.

func (p *Proxy) renewLease(w http.ResponseWriter, req *request) (Served, bool) {
	obj, _, err := offlineCodecs().UniversalDeserializer().Decode(req.body, nil, nil)
	if err != nil {
		return 0, false
	}
	lease, ok := obj.(*coordinationv1.Lease)
	if !ok || lease.Name != req.node {
		return 0, false
	}
	lease.APIVersion, lease.Kind = "coordination.k8s.io/v1", "Lease"
	raw, err := json.Marshal(lease)
	if err != nil {
		return 0, false
	}
	// A kubelet restarted offline reads its Lease back from here.
	k := cache.Key{Identity: req.caller.cacheIdentity(), Verb: cache.VerbGet, Group: "coordination.k8s.io", Version: "v1", Resource: "leases", Namespace: "kube-node-lease", Name: req.node}
	_ = p.cfg.Cache.PutObject(k, lease.ResourceVersion, raw)
	writeObject(w, req.in, lease, raw)
	return ServedCache, true
}

func (p *Proxy) patchNodeStatus(w http.ResponseWriter, req *request) (Served, bool) {
	if !isStrategicPatch(req) {
		return 0, false
	}
	// The node as the kubelet reads it (its GET).
	k := nodeKey(req)
	rv, current, err := p.cfg.Cache.Object(k)
	if err != nil {
		return 0, false
	}
	n, refused, err := patchedStatus(w, req, "node", current, nodepatch.Apply, checkNode)
	if refused {
		return ServedRefused, true
	}
	if err != nil {
		return 0, false
	}
	if meta, ok := n["metadata"].(map[string]any); ok {
		meta["resourceVersion"] = rv
	}
	raw, err := json.Marshal(n)
	if err != nil {
		return 0, false
	}
	_ = p.cfg.Cache.PutObject(k, rv, raw)
	writeObject(w, req.in, nil, raw)
	return ServedCache, true
}

// registerNode answers a restarted kubelet's create of its own Node while
// the cloud is gone, as the apiserver would: the Node exists (the hub holds
// it), so the kubelet goes on with it as it does after any restart.
func (p *Proxy) registerNode(w http.ResponseWriter, req *request) (Served, bool) {
	if _, _, err := p.cfg.Cache.Object(nodeKey(req)); err != nil {
		return 0, false
	}
	writeStatus(w, http.StatusConflict, metav1.StatusReasonAlreadyExists, fmt.Sprintf("nodes %q already exists", req.node))
	return ServedCache, true
}

// nodeKey is the cached GET of the kubelet's own Node.
func nodeKey(req *request) cache.Key {
	return cache.Key{Identity: req.caller.cacheIdentity(), Verb: cache.VerbGet, Version: "v1", Resource: "nodes", Name: req.node}
}

// isStrategicPatch reports a strategic merge patch, the kubelet's status
// patches (the only kind the hub applies).
func isStrategicPatch(req *request) bool {
	mt, _, _ := mime.ParseMediaType(req.in.Header.Get("Content-Type"))
	return mt == "application/strategic-merge-patch+json"
}

// patchedStatus applies the kubelet's status patch to current (a cached
// kind), checks the result decodes as that kind would, and returns current
// with the patched status. A patch that does not apply is answered here,
// Invalid as from the apiserver (refused).
func patchedStatus(w http.ResponseWriter, req *request, kind string, current []byte,
	apply func(original, patch []byte) ([]byte, error), check func([]byte) error) (obj map[string]any, refused bool, err error) {
	patched, err := apply(current, req.body)
	if err == nil {
		err = check(patched)
	}
	if err != nil {
		writeStatus(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, kind+" status patch does not apply to the cached "+kind+": "+err.Error())
		return nil, true, nil
	}
	obj, err = statusOnly(current, patched)
	return obj, false, err
}

// statusOnly is the cached node with the patched node's status: what the
// apiserver's node status strategy keeps of an update through /status is its
// status (it resets the spec, and drops status.config unless the node had
// one). The apiserver would also take metadata changes, judged by admission
// (NodeRestriction, sitegrid's site-membership policy) that the hub cannot
// run offline; so the hub keeps the cached metadata too, and the kubelet's
// next write to the cloud carries the truth.
func statusOnly(current, patched []byte) (map[string]any, error) {
	var cur, next map[string]any
	if err := utiljson.Unmarshal(current, &cur); err != nil {
		return nil, err
	}
	if err := utiljson.Unmarshal(patched, &next); err != nil {
		return nil, err
	}
	status, _ := next["status"].(map[string]any)
	if old, _ := cur["status"].(map[string]any); old == nil || old["config"] == nil {
		delete(status, "config")
	}
	if status == nil {
		delete(cur, "status")
	} else {
		cur["status"] = status
	}
	return cur, nil
}

// checkNode refuses a patched node whose fields the kubelet writes would
// not decode, as the apiserver refuses a patch whose result is not a Node.
func checkNode(b []byte) error {
	type condition struct {
		Type               string      `json:"type"`
		Status             string      `json:"status"`
		Reason             string      `json:"reason"`
		Message            string      `json:"message"`
		LastHeartbeatTime  metav1.Time `json:"lastHeartbeatTime"`
		LastTransitionTime metav1.Time `json:"lastTransitionTime"`
	}
	type address struct {
		Type    string `json:"type"`
		Address string `json:"address"`
	}
	var n struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     struct {
			PodCIDR       string   `json:"podCIDR"`
			PodCIDRs      []string `json:"podCIDRs"`
			ProviderID    string   `json:"providerID"`
			Unschedulable bool     `json:"unschedulable"`
			Taints        []struct {
				Key       string       `json:"key"`
				Value     string       `json:"value"`
				Effect    string       `json:"effect"`
				TimeAdded *metav1.Time `json:"timeAdded"`
			} `json:"taints"`
		} `json:"spec"`
		Status struct {
			Capacity        map[string]resource.Quantity `json:"capacity"`
			Allocatable     map[string]resource.Quantity `json:"allocatable"`
			Phase           string                       `json:"phase"`
			Conditions      []condition                  `json:"conditions"`
			Addresses       []address                    `json:"addresses"`
			DaemonEndpoints struct {
				KubeletEndpoint struct {
					Port int32 `json:"Port"`
				} `json:"kubeletEndpoint"`
			} `json:"daemonEndpoints"`
			NodeInfo map[string]any `json:"nodeInfo"`
			Images   []struct {
				Names     []string `json:"names"`
				SizeBytes int64    `json:"sizeBytes"`
			} `json:"images"`
			VolumesInUse    []string `json:"volumesInUse"`
			VolumesAttached []struct {
				Name       string `json:"name"`
				DevicePath string `json:"devicePath"`
			} `json:"volumesAttached"`
		} `json:"status"`
	}
	return utiljson.Unmarshal(b, &n)
}

// writeObject answers with obj in JSON, or in protobuf when the client
// accepts only that and obj is given (a Lease; the hub has no protobuf
// codec for Nodes, whose answers are JSON as all its cached answers).
func writeObject(w http.ResponseWriter, r *http.Request, obj runtime.Object, jsonBody []byte) {
	writeObjectCode(w, r, http.StatusOK, obj, jsonBody)
}

// writeObjectCode is writeObject with another status code.
func writeObjectCode(w http.ResponseWriter, r *http.Request, code int, obj runtime.Object, jsonBody []byte) {
	accept := r.Header.Get("Accept")
	if obj != nil && accept != "" && !strings.Contains(accept, "json") && !strings.Contains(accept, "*/*") && strings.Contains(accept, runtime.ContentTypeProtobuf) {
		if info, ok := runtime.SerializerInfoForMediaType(offlineCodecs().SupportedMediaTypes(), runtime.ContentTypeProtobuf); ok {
			w.Header().Set("Content-Type", runtime.ContentTypeProtobuf)
			w.WriteHeader(code)
			_ = info.Serializer.Encode(obj, w)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(jsonBody)
}

// offlineCodecs decode and encode the Lease the kubelet renews offline and
// the TokenRequests it sends (in protobuf or JSON). A scheme of just that kind, built on the first offline
// write, keeps the hub from registering every API type of the cluster
// (memory the node would pay for).
var offlineCodecs = sync.OnceValue(func() serializer.CodecFactory {
	s := runtime.NewScheme()
	utilruntime.Must(coordinationv1.AddToScheme(s))
	utilruntime.Must(authenticationv1.AddToScheme(s))
	return serializer.NewCodecFactory(s)
})
