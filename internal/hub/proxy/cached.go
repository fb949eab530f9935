package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"

	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/topology"
)

// tokenIdentity names a token's owner in cache keys without storing the
// token: a hash of it.
func tokenIdentity(authorization string) string {
	sum := sha256.Sum256([]byte(authorization))
	return "token:" + hex.EncodeToString(sum[:16])
}

// cacheKey returns the key of a GET or LIST the hub keeps. Watches are
// forwarded but not yet kept.
func (p *Proxy) cacheKey(identity string, r *http.Request) (cache.Key, bool) {
	if p.cfg.Cache == nil || r.Method != http.MethodGet {
		return cache.Key{}, false
	}
	if w := r.URL.Query().Get("watch"); w == "true" || w == "1" {
		return cache.Key{}, false
	}
	k, err := cache.KeyForRequest(identity, r)
	if err != nil {
		return cache.Key{}, false
	}
	return k, true
}

// isJSON reports whether an answer is JSON, the only form the hub keeps.
func isJSON(resp *http.Response) bool {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt == "application/json"
}

// store keeps a successful JSON answer of a cacheable request: a LIST as it
// streams through (teeList), an object or discovery document whole.
func (p *Proxy) store(resp *http.Response) error {
	k, ok := resp.Request.Context().Value(keyCtx{}).(cache.Key)
	if !ok || resp.StatusCode != http.StatusOK || !isJSON(resp) {
		return nil
	}
	if k.Verb == cache.VerbList {
		p.teeList(resp, k)
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return err
	}
	// Stored off the client's path; the key's lock keeps an older answer
	// from overwriting a newer one.
	unlock := p.keys.lock(k.Bytes())
	go func() {
		defer unlock()
		if err := p.putObject(k, body); err != nil {
			klog.V(2).InfoS("not cached", "key", k.String(), "err", err)
		}
	}()
	return nil
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
	it, m, err := itemOf(body)
	if err != nil {
		return err
	}
	return p.cfg.Cache.PutObject(k, m.ResourceVersion, it.Raw)
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
	w.Header().Set("X-Sitegrid-Hub-Cache", "offline")
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
		w.Header().Set("X-Sitegrid-Hub-Cache", "offline")
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
