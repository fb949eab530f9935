package proxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/kubeproto"
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
		for _, enc := range p.freshestFirst(req.key, req.encodings) {
			if p.serveCached(w, req.key.As(enc), req.transform) {
				return ServedCache
			}
		}
	case watchRead:
		for _, enc := range p.freshestFirst(req.key, req.encodings) {
			if req.in.Context().Err() == nil && p.holdWatch(w, req.in, req.key.As(enc), req.transform) {
				return ServedCache
			}
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

// freshestFirst orders the encodings a client accepts by how recent the
// cache's answer in each is, the client's preference among equals. Each
// encoding's entry is updated by the reads made in it: a kube-proxy's JSON
// watch keeps the JSON list current, while a protobuf LIST of the same
// caller made once is as old as it is.
func (p *Proxy) freshestFirst(k cache.Key, encodings []string) []string {
	if len(encodings) < 2 {
		return encodings
	}
	versions := map[string]string{}
	for _, enc := range encodings {
		if k.Verb == cache.VerbList {
			if m, err := p.cfg.Cache.Meta(k.As(enc)); err == nil {
				versions[enc] = m.ResourceVersion
			}
		} else if rv, _, err := p.cfg.Cache.Object(k.As(enc)); err == nil {
			versions[enc] = rv
		}
	}
	out := slices.Clone(encodings)
	slices.SortStableFunc(out, func(a, b string) int {
		switch {
		case olderThan(versions[b], versions[a]):
			return -1
		case olderThan(versions[a], versions[b]):
			return 1
		}
		return 0
	})
	return out
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
	w.Header().Set("Content-Type", contentType(k.Encoding, false))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return true
}

// serveCachedList writes a cached list at its last synced resource version
// item by item, never holding the whole answer in memory. The key stays
// locked meanwhile, so the list read is the list of one moment (a protobuf
// list's length is written before its items).
func (p *Proxy) serveCachedList(w http.ResponseWriter, k cache.Key, t *topology.Transform) bool {
	defer p.keys.lock(k.Bytes())()
	proto := k.Encoding == cache.EncodingProtobuf
	started, n, size := false, 0, int64(0)
	// Reading a large list maps much of the cache file: released after.
	defer func() { p.release.releaseAfterLargeList(size) }()
	out := bufio.NewWriterSize(w, 32<<10)
	var want cache.ListMeta
	err := p.cfg.Cache.StreamList(k, func(meta cache.ListMeta) error {
		if meta.Kind == "" {
			return errors.New("cached list has no kind")
		}
		want = meta
		w.Header().Set("Content-Type", contentType(k.Encoding, false))
		if proto {
			head, total := kubeproto.ListHeader(kubeproto.TypeMeta{APIVersion: meta.APIVersion, Kind: meta.Kind}, meta.ResourceVersion,
				meta.Count, meta.ItemBytes, meta.LengthBytes)
			w.Header().Set("Content-Length", strconv.FormatInt(total, 10))
			w.WriteHeader(http.StatusOK)
			started = true
			_, err := out.Write(head)
			return err
		}
		head, err := json.Marshal(map[string]any{
			"kind": meta.Kind, "apiVersion": meta.APIVersion,
			"metadata": map[string]string{"resourceVersion": meta.ResourceVersion},
		})
		if err != nil {
			return err
		}
		w.WriteHeader(http.StatusOK)
		started = true
		// {"apiVersion":..,"kind":..,"metadata":{..}} + ,"items":[ .. ]}
		_, err = out.Write(append(head[:len(head)-1], `,"items":[`...))
		return err
	}, func(it cache.Item) error {
		n++
		size += int64(len(it.Raw))
		if proto {
			_, err := out.Write(kubeproto.AppendItem(nil, it.Raw))
			return err
		}
		if t != nil {
			var err error
			if it.Raw, err = t.Apply(it.Raw); err != nil {
				return err
			}
		}
		if n > 1 {
			if err := out.WriteByte(','); err != nil {
				return err
			}
		}
		_, err := out.Write(it.Raw)
		return err
	})
	if !started {
		return false
	}
	if err == nil && proto && (n != want.Count || size != want.ItemBytes) {
		err = fmt.Errorf("cached list changed while read: %d items of %d bytes, its metadata said %d of %d", n, size, want.Count, want.ItemBytes)
	}
	if err == nil && !proto {
		_, err = out.WriteString("]}")
	}
	if err == nil {
		err = out.Flush()
	}
	if err != nil {
		// The header is out: abort the stream so the client sees an error,
		// never a short list.
		panic(http.ErrAbortHandler)
	}
	return true
}
