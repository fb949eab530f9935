package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/nodepatch"
)

// A kubelet that (re)starts its node's pods without the cloud reports their
// status as it goes: a new sandbox, containers running again, Ready. The
// hub answers those patches as the apiserver would, from the pod it last
// read for the kubelet, and keeps the resulting status until the cloud is
// back; then it writes it upstream, as the kubelet, before anything newer
// the kubelet sends for that pod. The kubelet believes its patch landed
// (that is what the answer says), so without the hub's replay the cloud
// would keep the old status until the pod next changed.
//
// What is written is the whole status as the kubelet last saw it (a JSON
// merge patch with the pod's UID as precondition): the kubelet's patches are
// deltas from what the hub answered, so the cloud must have that first.

// pendingStatus is a pod status kept for the cloud.
type pendingStatus struct {
	User   string          `json:"user"`
	Groups []string        `json:"groups"`
	Patch  json.RawMessage `json:"patch"`
}

// podKey is the cached GET of a kubelet's pod.
func podKey(caller Caller, namespace, name string) cache.Key {
	return cache.Key{Identity: caller.cacheIdentity(), Verb: cache.VerbGet, Version: "v1", Resource: "pods", Namespace: namespace, Name: name}
}

func pendingKey(k cache.Key) cache.Key {
	k.Verb = cache.VerbPodStatus
	return k
}

// patchPodStatus answers a kubelet's pod status patch offline.
func (p *Proxy) patchPodStatus(w http.ResponseWriter, req *request) (Served, bool) {
	if !isStrategicPatch(req) {
		return 0, false
	}
	unlock := p.keys.lock(pendingKey(req.key).Bytes())
	defer unlock()
	rv, current, err := p.cfg.Cache.Object(req.key)
	if err != nil {
		return 0, false
	}
	var pod struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
		Spec struct {
			NodeName string `json:"nodeName"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(current, &pod); err != nil || pod.Spec.NodeName != req.node {
		// Not this kubelet's pod: the cloud (NodeRestriction) decides.
		return 0, false
	}
	// Only the status changes through /status; the cached metadata and
	// spec stay as the cloud last said.
	obj, refused, err := patchedStatus(w, req, "pod", current, nodepatch.ApplyPod, checkPodStatus)
	if refused {
		return ServedRefused, true
	}
	if err != nil {
		return 0, false
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return 0, false
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": pod.Metadata.UID}, "status": obj["status"]})
	if err != nil {
		return 0, false
	}
	pending, err := json.Marshal(pendingStatus{User: req.caller.Certificate.User, Groups: req.caller.Certificate.Groups, Patch: patch})
	if err != nil {
		return 0, false
	}
	if err := p.cfg.Cache.PutObject(pendingKey(req.key), rv, pending); err != nil {
		return 0, false // not kept for the cloud: not answered either
	}
	_ = p.cfg.Cache.PutObject(req.key, rv, raw)
	writeObject(w, req.in, nil, raw)
	return ServedCache, true
}

// checkPodStatus refuses a patched pod whose status fields the kubelet
// writes would not decode, as the apiserver refuses a patch whose result is
// not a Pod.
func checkPodStatus(b []byte) error {
	type state struct {
		Running *struct {
			StartedAt metav1.Time `json:"startedAt"`
		} `json:"running"`
		Terminated *struct {
			ExitCode   int32       `json:"exitCode"`
			StartedAt  metav1.Time `json:"startedAt"`
			FinishedAt metav1.Time `json:"finishedAt"`
		} `json:"terminated"`
		Waiting *struct {
			Reason string `json:"reason"`
		} `json:"waiting"`
	}
	type containerStatus struct {
		Name                 string `json:"name"`
		Ready                bool   `json:"ready"`
		RestartCount         int32  `json:"restartCount"`
		State                state  `json:"state"`
		LastTerminationState state  `json:"lastState"`
		Started              *bool  `json:"started"`
	}
	var pod struct {
		Status struct {
			Phase      string `json:"phase"`
			Conditions []struct {
				Type               string      `json:"type"`
				Status             string      `json:"status"`
				LastProbeTime      metav1.Time `json:"lastProbeTime"`
				LastTransitionTime metav1.Time `json:"lastTransitionTime"`
			} `json:"conditions"`
			PodIP  string `json:"podIP"`
			PodIPs []struct {
				IP string `json:"ip"`
			} `json:"podIPs"`
			StartTime             *metav1.Time      `json:"startTime"`
			ContainerStatuses     []containerStatus `json:"containerStatuses"`
			InitContainerStatuses []containerStatus `json:"initContainerStatuses"`
		} `json:"status"`
	}
	if err := json.Unmarshal(b, &pod); err != nil {
		return err
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == "" {
			return fmt.Errorf("a condition has no type")
		}
	}
	return nil
}

// FlushPodStatuses writes every kept pod status to the cloud at endpoint;
// called when the hub finds the cloud again. What the cloud refuses for
// good (the pod is gone, or is another pod of that name) is dropped; what
// does not get through stays for the next time.
func (p *Proxy) FlushPodStatuses(ctx context.Context, endpoint string) {
	if p.cfg.Cache == nil {
		return
	}
	keys, err := p.cfg.Cache.ObjectKeys(cache.VerbPodStatus)
	if err != nil {
		klog.ErrorS(err, "list the pod statuses kept for the cloud")
		return
	}
	for _, k := range keys {
		if err := p.flushPodStatus(ctx, endpoint, k); err != nil {
			klog.InfoS("pod status kept for the cloud not written yet", "namespace", k.Namespace, "pod", k.Name, "err", err)
			return
		}
	}
}

// flushPodStatus writes one kept status (pending key k) upstream.
func (p *Proxy) flushPodStatus(ctx context.Context, endpoint string, k cache.Key) error {
	unlock := p.keys.lock(k.Bytes())
	defer unlock()
	_, raw, err := p.cfg.Cache.Object(k)
	if err == cache.ErrNotCached {
		return nil // written by an earlier flush
	} else if err != nil {
		return err
	}
	var ps pendingStatus
	if err := json.Unmarshal(raw, &ps); err != nil {
		_ = p.cfg.Cache.DeleteObject(k)
		return nil
	}
	u := endpoint + "/api/v1/namespaces/" + url.PathEscape(k.Namespace) + "/pods/" + url.PathEscape(k.Name) + "/status"
	r, err := http.NewRequestWithContext(ctx, http.MethodPatch, u, bytes.NewReader(ps.Patch))
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/merge-patch+json")
	r.Header.Set("Accept", "application/json")
	caller := Caller{Certificate: &Identity{User: ps.User, Groups: ps.Groups}}
	caller.present(r.Header)
	resp, err := p.transport(caller).RoundTrip(r)
	if err != nil {
		p.cfg.Upstream.Report(endpoint, err)
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode/100 == 2:
		klog.V(2).InfoS("pod status written to the cloud", "namespace", k.Namespace, "pod", k.Name)
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusConflict ||
		resp.StatusCode == http.StatusUnprocessableEntity || resp.StatusCode == http.StatusForbidden:
		klog.InfoS("pod status kept offline refused by the cloud; dropped", "namespace", k.Namespace, "pod", k.Name, "code", resp.StatusCode, "answer", string(body))
	default:
		return fmt.Errorf("the cloud answered %d: %s", resp.StatusCode, body)
	}
	if resp.StatusCode/100 == 2 {
		// The cloud's answer is the pod the kubelet reads next.
		get := k
		get.Verb = cache.VerbGet
		_ = p.putObject(get, body)
	}
	return p.cfg.Cache.DeleteObject(k)
}
