package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
)

// watchKey returns the list key a watch updates, if the hub keeps it.
func (p *Proxy) watchKey(identity string, r *http.Request) (cache.Key, bool) {
	if p.cfg.Cache == nil || r.Method != http.MethodGet {
		return cache.Key{}, false
	}
	if w := r.URL.Query().Get("watch"); w != "true" && w != "1" {
		return cache.Key{}, false
	}
	k, err := cache.KeyForRequest(identity, r)
	if err != nil || k.Verb != cache.VerbList {
		return cache.Key{}, false
	}
	return k, true
}

// watchEvent is one event of a JSON watch stream.
type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// initialEventsEnd is the annotation of the bookmark that ends the initial
// events of a watch-list (sendInitialEvents=true).
const initialEventsEnd = "k8s.io/initial-events-end"

// teeWatch lets the client read the stream as it comes while the hub applies
// each event to the cached list. A watch-list (sendInitialEvents=true, how
// informers list by default) first delivers the whole list as ADDED events
// up to a marked bookmark: those replace the cached list.
func (p *Proxy) teeWatch(resp *http.Response, k cache.Key) {
	pr, pw := io.Pipe()
	resp.Body = &teeBody{ReadCloser: resp.Body, tee: io.TeeReader(resp.Body, pw), pw: pw}
	initial := resp.Request.URL.Query().Get("sendInitialEvents") == "true"
	go func() {
		dec := json.NewDecoder(pr)
		var items []cache.Item
		for {
			var ev watchEvent
			if err := dec.Decode(&ev); err != nil {
				_, _ = io.Copy(io.Discard, pr)
				return
			}
			if !initial {
				p.applyEvent(k, ev)
				continue
			}
			var o struct {
				Kind       string     `json:"kind"`
				APIVersion string     `json:"apiVersion"`
				Metadata   objectMeta `json:"metadata"`
			}
			if err := json.Unmarshal(ev.Object, &o); err != nil {
				continue
			}
			if ev.Type == "BOOKMARK" && o.Metadata.Annotations[initialEventsEnd] == "true" {
				_ = p.cfg.Cache.ReplaceList(k, cache.ListMeta{ResourceVersion: o.Metadata.ResourceVersion, Kind: o.Kind + "List", APIVersion: o.APIVersion}, items)
				initial, items = false, nil
				continue
			}
			if ev.Type == string(cache.Added) {
				items = append(items, cache.Item{Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Raw: ev.Object})
			}
		}
	}()
}

type teeBody struct {
	io.ReadCloser
	tee io.Reader
	pw  *io.PipeWriter
}

func (b *teeBody) Read(p []byte) (int, error) { return b.tee.Read(p) }

func (b *teeBody) Close() error {
	_ = b.pw.Close()
	return b.ReadCloser.Close()
}

func (p *Proxy) applyEvent(k cache.Key, ev watchEvent) {
	var o struct {
		Metadata objectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(ev.Object, &o); err != nil {
		return
	}
	switch ev.Type {
	case string(cache.Added), string(cache.Modified), string(cache.Deleted):
		_ = p.cfg.Cache.ApplyEvent(k, cache.EventType(ev.Type), cache.Item{Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Raw: ev.Object}, o.Metadata.ResourceVersion)
	case "BOOKMARK":
		_ = p.cfg.Cache.SetListResourceVersion(k, o.Metadata.ResourceVersion)
	}
}

// bookmarkEvery is how often an offline watch sends a bookmark.
var bookmarkEvery = 10 * time.Second

// holdWatch keeps a watch open while the cloud is gone: no events, a
// bookmark at the cached resource version now and then if the client asked
// for bookmarks, and a clean end when the cloud is back, so the client
// re-lists once instead of in a loop.
func (p *Proxy) holdWatch(w http.ResponseWriter, r *http.Request, k cache.Key) bool {
	meta, _, err := p.cfg.Cache.List(k)
	if err != nil {
		return false
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Sitegrid-Hub-Cache", "offline")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	bookmarks := r.URL.Query().Get("allowWatchBookmarks") == "true"
	send := func(ev watchEvent) {
		var buf bytes.Buffer
		_ = json.NewEncoder(&buf).Encode(ev)
		_, _ = w.Write(buf.Bytes())
		if flusher != nil {
			flusher.Flush()
		}
	}
	bookmark := func(annotations map[string]string) {
		md := map[string]any{"resourceVersion": meta.ResourceVersion}
		if annotations != nil {
			md["annotations"] = annotations
		}
		obj, _ := json.Marshal(map[string]any{"kind": strings.TrimSuffix(meta.Kind, "List"), "apiVersion": meta.APIVersion, "metadata": md})
		send(watchEvent{Type: "BOOKMARK", Object: obj})
	}
	if r.URL.Query().Get("sendInitialEvents") == "true" {
		// A watch-list: the cached list as ADDED events, then the marked
		// bookmark that says the list is complete.
		_, items, err := p.cfg.Cache.List(k)
		if err != nil {
			return true
		}
		for _, it := range items {
			send(watchEvent{Type: string(cache.Added), Object: it.Raw})
		}
		bookmark(map[string]string{initialEventsEnd: "true"})
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-r.Context().Done():
			return true
		case <-tick.C:
			if _, online := p.cfg.Upstream.Online(); online {
				return true // the client re-lists against the cloud
			}
			if bookmarks && time.Since(last) >= bookmarkEvery {
				bookmark(nil)
				last = time.Now()
			}
		}
	}
}
