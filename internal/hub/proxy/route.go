package proxy

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/sitegrid/sitegrid/internal/hub/apirequest"
	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/topology"
)

// request is one API request as the hub reads it on arrival, once: who
// sent it, what it asks for, and how the hub may answer it without the
// cloud. Every later stage, online or offline, reads this value.
type request struct {
	in     *http.Request
	caller Caller
	// read is how the hub keeps the answer: not at all, as an object (a GET,
	// LIST or discovery document), or as a watch of the list key.
	read readKind
	// key is the cache key of a kept read (a watch's: its list's).
	key cache.Key
	// table is a read asking for a server-side printed Table (kubectl get):
	// it goes up as asked and its answer is kept as a Table; offline, a
	// Table seen before is served, else the objects (kubectl prints those
	// itself, with fewer columns).
	table bool
	// transform, when set, filters the answer's objects for the caller
	// (service topology).
	transform *topology.Transform
	// asIs is a kept read that goes up with the client's own Accept, so
	// the cloud answers in the encoding the client prefers and the hub
	// keeps that (encoding.go); other kept reads go up asking for JSON.
	// encodings are the encodings the client may be answered in from the
	// cache, preferred first (req.key is the JSON one's key).
	asIs      bool
	encodings []string
	// write is a kubelet write the hub answers offline; body is its body,
	// read on arrival so that the request that finds the cloud gone can be
	// answered too, after its body went to the cloud.
	write offlineWrite
	node  string
	body  []byte
}

type readKind int

const (
	noRead readKind = iota
	objectRead
	watchRead
)

// offlineWrite is one of the two writes a kubelet must make to stay
// healthy while the cloud is gone.
type offlineWrite int

const (
	noWrite offlineWrite = iota
	renewLease
	patchNodeStatus
	// requestToken is a kubelet's TokenRequest for a pod (token.go).
	requestToken
	// patchPodStatus is a kubelet's status patch of one of its pods
	// (podstatus.go); registerNode its create of its own Node at start.
	patchPodStatus
	registerNode
)

// maxOfflineWrite bounds the body the hub keeps of such a write.
const maxOfflineWrite = 4 << 20

// route reads r of caller into a request.
func (p *Proxy) route(r *http.Request, caller Caller) *request {
	req := &request{in: r, caller: caller}
	info, err := apirequest.Parse(r)
	if err != nil {
		return req // forwarded: the apiserver says what is wrong with it
	}
	if p.cfg.Cache != nil && r.Method == http.MethodGet {
		if k, err := cache.KeyFor(caller.cacheIdentity(), info); err == nil {
			watch := r.URL.Query().Get("watch")
			switch {
			case watch != "true" && watch != "1":
				req.read, req.key = objectRead, k
			case k.Verb == cache.VerbList:
				req.read, req.key = watchRead, k
			}
		}
	}
	if t := p.cfg.Filter.ForRead(r.UserAgent(), info); t != nil {
		t.WaitReady(r.Context(), 10*time.Second)
		req.transform = t
	}
	req.table = req.read == objectRead && req.transform == nil && wantsTable(r)
	req.encodings = []string{cache.EncodingJSON}
	// JSON still for a filtered component's reads (the filter rewrites
	// JSON) and for the kubelet's: the hub answers the kubelet's writes
	// offline by patching its cached node and pods, which it reads as JSON.
	if _, kubelet := caller.Kubelet(); req.read != noRead && info.IsResourceRequest && !req.table && req.transform == nil && !kubelet {
		if encs, ok := acceptedEncodings(r.Header.Get("Accept")); ok {
			req.asIs, req.encodings = true, encs
		}
	}
	if node, ok := caller.Kubelet(); ok && p.cfg.Cache != nil && info.IsResourceRequest {
		req.kubeletWrite(node, info, r.Header.Get("Content-Type"))
	}
	return req
}

// kubeletWrite marks the kubelet writes the hub answers offline (for the
// kubelet's own node, its own pods, its pods' tokens) and keeps their
// bodies.
func (req *request) kubeletWrite(node string, info *apirequest.Info, contentType string) {
	core := info.APIGroup == "" && info.APIVersion == "v1"
	switch {
	case info.Verb == "update" && info.APIGroup == "coordination.k8s.io" && info.APIVersion == "v1" &&
		info.Resource == "leases" && info.Namespace == "kube-node-lease" && info.Subresource == "" && info.Name == node:
		req.write = renewLease
	case core && info.Verb == "patch" && info.Resource == "nodes" && info.Subresource == "status" && info.Name == node:
		req.write = patchNodeStatus
	case core && info.Verb == "patch" && info.Resource == "pods" && info.Subresource == "status" && info.Name != "":
		req.write, req.key = patchPodStatus, podKey(req.caller, info.Namespace, info.Name)
	case core && info.Verb == "create" && info.Resource == "nodes" && info.Subresource == "":
		// NodeRestriction lets a kubelet create only its own Node; the
		// body is not needed.
		req.write, req.node = registerNode, node
		return
	case core && info.Verb == "create" && info.Resource == "serviceaccounts" && info.Subresource == "token":
		req.write = requestToken
	default:
		return
	}
	req.node = node
	req.keepBody()
	if req.write == requestToken {
		if k, ok := tokenKey(req.caller, info, req.body, contentType); ok {
			req.key = k
		} else {
			req.write = noWrite
		}
	}
}

// keepBody reads the body of a write the hub may answer offline, and puts
// it back for the cloud. A body too large to keep goes up as it came, and
// the write is not answered offline.
func (req *request) keepBody() {
	body, err := io.ReadAll(io.LimitReader(req.in.Body, maxOfflineWrite+1))
	if err != nil || len(body) > maxOfflineWrite {
		req.in.Body = readCloser{io.MultiReader(bytes.NewReader(body), req.in.Body), req.in.Body}
		req.write = noWrite
		return
	}
	_ = req.in.Body.Close()
	req.body = body
	req.in.Body = io.NopCloser(bytes.NewReader(body))
}

type readCloser struct {
	io.Reader
	io.Closer
}

// tableKey is the key a Table answer is kept under.
func (req *request) tableKey() cache.Key {
	k := req.key
	k.Verb = cache.VerbTable
	return k
}

// wantsTable reports a read that asks for a server-side printed Table in
// JSON first (kubectl get does).
func wantsTable(r *http.Request) bool {
	first, _, _ := strings.Cut(r.Header.Get("Accept"), ",")
	mt, params, err := mime.ParseMediaType(first)
	return err == nil && mt == "application/json" && params["as"] == "Table"
}
