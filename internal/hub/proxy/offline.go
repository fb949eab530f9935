package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/topology"
)

// serveOffline serves req without the cloud: a kept read from the cache (a
// Table seen before, else the objects), a watch held open, a kubelet's
// Lease renewal, node or pod status patch, token request or registration
// answered from its cached objects, and anything else refused with the
// reason. It is the one answer the hub has
// without the cloud, whether it knew the cloud was gone (cause nil) or req
// is the request that found out (cause is what went wrong).
func (p *Proxy) serveOffline(w http.ResponseWriter, req *request, cause error) Served {
	switch req.read {
	case objectRead:
		if req.table && p.serveCached(w, req.tableKey(), nil) {
			return ServedCache
		}
		if p.serveCached(w, req.key, req.transform) {
			return ServedCache
		}
	case watchRead:
		if req.in.Context().Err() == nil && p.holdWatch(w, req.in, req.key, req.transform) {
			return ServedCache
		}
	}
	switch req.write {
	case renewLease:
		if served, ok := p.renewLease(w, req); ok {
			return served
		}
	case patchNodeStatus:
		if served, ok := p.patchNodeStatus(w, req); ok {
			return served
		}
	case requestToken:
		if served, ok := p.serveToken(w, req); ok {
			return served
		}
	case patchPodStatus:
		if served, ok := p.patchPodStatus(w, req); ok {
			return served
		}
	case registerNode:
		if served, ok := p.registerNode(w, req); ok {
			return served
		}
	}
	msg := "the cloud apiserver is unreachable from this node"
	if cause != nil {
		msg = fmt.Sprintf("the cloud apiserver did not answer (%v)", cause)
	}
	switch {
	case req.in.Method == http.MethodGet:
		msg += ", and the hub has no cached answer"
	case cause != nil:
		// The write may have reached the cloud before the connection broke.
		msg += "; the hub cannot accept this " + req.in.Method + " offline"
	default:
		msg += "; the hub cannot accept this " + req.in.Method + " offline (nothing was written)"
	}
	writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, msg)
	return ServedRefused
}

// serveCached answers from the cache; false if it holds nothing.
func (p *Proxy) serveCached(w http.ResponseWriter, k cache.Key, t *topology.Transform) bool {
	// An answer still being stored (off the client's path) is waited for.
	p.keys.lock(k.Bytes())()
	if k.Verb == cache.VerbList {
		return p.serveCachedList(w, k, t)
	}
	_, body, err := p.cfg.Cache.Object(k)
	if err != nil {
		return false
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return true
}

// serveCachedList writes a cached list at its last synced resource version
// item by item, never holding the whole answer in memory.
func (p *Proxy) serveCachedList(w http.ResponseWriter, k cache.Key, t *topology.Transform) bool {
	started, n, size := false, 0, int64(0)
	// Reading a large list maps much of the cache file: released after.
	defer func() { p.release.releaseAfterLargeList(size) }()
	err := p.cfg.Cache.StreamList(k, func(meta cache.ListMeta) error {
		if meta.Kind == "" {
			return errors.New("cached list has no kind")
		}
		head, err := json.Marshal(map[string]any{
			"kind": meta.Kind, "apiVersion": meta.APIVersion,
			"metadata": map[string]string{"resourceVersion": meta.ResourceVersion},
		})
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		started = true
		// {"apiVersion":..,"kind":..,"metadata":{..}} + ,"items":[ .. ]}
		_, err = w.Write(append(head[:len(head)-1], `,"items":[`...))
		return err
	}, func(it cache.Item) error {
		if t != nil {
			var err error
			if it.Raw, err = t.Apply(it.Raw); err != nil {
				return err
			}
		}
		if n > 0 {
			if _, err := w.Write([]byte{','}); err != nil {
				return err
			}
		}
		n++
		size += int64(len(it.Raw))
		_, err := w.Write(it.Raw)
		return err
	})
	if !started {
		return false
	}
	if err != nil {
		// The header is out: abort the stream so the client sees an error,
		// never a short list.
		panic(http.ErrAbortHandler)
	}
	_, _ = w.Write([]byte("]}"))
	return true
}
