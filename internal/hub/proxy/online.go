package proxy

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/kubeproto"
)

// forward sends req to the cloud apiserver at endpoint. The answer is kept
// on its way back (store, teeList, teeWatch) and, for a filtered component,
// filtered; a request that finds the cloud gone is served as offline.
func (p *Proxy) forward(w http.ResponseWriter, req *request, endpoint string) Served {
	target, err := url.Parse(endpoint)
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, err.Error())
		return ServedRefused
	}
	if req.write == patchPodStatus {
		// What the hub answered offline for this pod reaches the cloud
		// before the kubelet's next delta from it.
		if err := p.flushPodStatus(req.in.Context(), endpoint, pendingKey(req.key)); err != nil {
			klog.V(2).InfoS("pod status kept offline not written first", "namespace", req.key.Namespace, "pod", req.key.Name, "err", err)
		}
	}
	served := ServedUpstream
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
			req.caller.present(r.Out.Header)
			if req.read != noRead || req.write == requestToken {
				// Reads the hub filters or patches go up in JSON (clients of
				// the apiserver accept JSON whatever else they prefer);
				// the others in the client's encoding (encoding.go).
				if !req.table && !req.asIs {
					r.Out.Header.Set("Accept", "application/json")
				}
				// A plain read passes through as compressed as the client
				// asked: the hub decompresses its copy off the client's path
				// (and not at all for a list it holds already). Otherwise,
				// without the client's Accept-Encoding, the transport asks
				// for gzip itself and hands the hub the plain body.
				if req.read != objectRead || !req.asIs {
					r.Out.Header.Del("Accept-Encoding")
				}
			}
		},
		Transport: p.transport(req.caller),
		// Watches and logs stream: flush every write at once.
		FlushInterval: -1,
		BufferPool:    copyBuffers,
		ModifyResponse: func(resp *http.Response) error {
			p.cfg.Upstream.Report(endpointOf(resp.Request.URL), nil)
			return p.received(resp, req)
		},
		// The first request to find the cloud gone is served as the ones
		// after the tracker noticed.
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() == nil { // not the client going away
				p.cfg.Upstream.Report(endpointOf(r.URL), err)
			}
			served = p.serveOffline(w, req, err)
		},
	}
	rp.ServeHTTP(w, req.in)
	return served
}

func endpointOf(u *url.URL) string { return u.Scheme + "://" + u.Host }

// received keeps a successful answer of a kept read and filters it for a
// filtered component. The cache keeps what the cloud said; a filtered
// component sees its node's share of it.
func (p *Proxy) received(resp *http.Response, req *request) error {
	enc, keepable := encodingOf(resp)
	ok := resp.StatusCode == http.StatusOK && keepable
	isJSON := keepable && enc == cache.EncodingJSON
	switch {
	case req.write == requestToken && resp.StatusCode == http.StatusCreated && isJSON:
		body, err := readBack(resp)
		if err != nil {
			return err
		}
		if err := p.keepToken(req.key, body); err != nil {
			klog.V(2).InfoS("token not kept", "namespace", req.key.Namespace, "serviceAccount", req.key.Name, "err", err)
		}
	case req.read == watchRead && ok:
		p.teeWatch(resp, req.key.As(enc))
	case req.read == objectRead && isJSON && req.table:
		if err := p.store(resp, req.tableKey()); err != nil {
			return err
		}
	case req.read == objectRead && ok:
		if err := p.store(resp, req.key.As(enc)); err != nil {
			return err
		}
	}
	if req.transform != nil && ok && isJSON {
		if req.read == watchRead {
			resp.Body = p.filteredWatch(resp.Body, req.key, req.transform)
		} else {
			resp.Body = filteredList(resp.Body, req.transform)
		}
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
	}
	return nil
}

// store keeps a successful answer under k (whose encoding is the
// answer's): a LIST as it streams through (teeList), an object or
// discovery document whole.
func (p *Proxy) store(resp *http.Response, k cache.Key) error {
	if k.Verb == cache.VerbList {
		p.teeList(resp, k)
		return nil
	}
	body, err := readBack(resp)
	if err != nil {
		return err
	}
	gzipped := resp.Header.Get("Content-Encoding") == "gzip"
	// Stored off the client's path; the key's lock keeps an older answer
	// from overwriting a newer one.
	unlock := p.keys.lock(k.Bytes())
	go func() {
		defer unlock()
		var err error
		if gzipped { // decompressed here, off the client's path
			body, err = gunzip(body)
		}
		if err == nil {
			err = p.putObject(k, body)
		}
		if err != nil {
			klog.V(2).InfoS("not cached", "key", k.String(), "err", err)
		}
	}()
	return nil
}

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// readBack reads a whole answer and puts it back for the client.
func readBack(resp *http.Response) ([]byte, error) {
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return body, err
}

type objectMeta struct {
	Namespace       string            `json:"namespace"`
	Name            string            `json:"name"`
	ResourceVersion string            `json:"resourceVersion"`
	Annotations     map[string]string `json:"annotations"`
}

func (p *Proxy) putObject(k cache.Key, body []byte) error {
	if k.Verb == cache.VerbDiscovery {
		return p.cfg.Cache.PutObject(k, "", body)
	}
	o, err := keep(k.Encoding, body, false)
	if err != nil {
		return err
	}
	if k.Encoding == cache.EncodingProtobuf {
		return p.cfg.Cache.PutObject(k, o.meta.ResourceVersion, kubeproto.Wrap(o.typ, o.item.Raw))
	}
	return p.cfg.Cache.PutObject(k, o.meta.ResourceVersion, o.item.Raw)
}
