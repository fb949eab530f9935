package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
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
// the events to the cached list. A watch-list (sendInitialEvents=true, how
// informers list by default) first delivers the whole list as ADDED events
// up to a marked bookmark: those replace the cached list. Events that arrive
// while the previous ones are being written are written together, in one
// transaction: a burst costs one fsync, not one per event.
func (p *Proxy) teeWatch(resp *http.Response, k cache.Key) {
	pr, pw := io.Pipe()
	endpoint := endpointOf(resp.Request.URL)
	resp.Body = &teeBody{ReadCloser: resp.Body, tee: io.TeeReader(resp.Body, pw), pw: pw,
		lost: func(err error) {
			if resp.Request.Context().Err() == nil { // the cloud, not the client, went away
				p.cfg.Upstream.Report(endpoint, err)
			}
		}}
	initial := resp.Request.URL.Query().Get("sendInitialEvents") == "true"
	ops := make(chan cacheOp, 1024)
	go p.writeCache(k, ops)
	go func() {
		defer close(ops)
		dec := json.NewDecoder(pr)
		var items []cache.Item
		for {
			var ev watchEvent
			if err := dec.Decode(&ev); err != nil {
				_, _ = io.Copy(io.Discard, pr)
				return
			}
			var o struct {
				Kind       string     `json:"kind"`
				APIVersion string     `json:"apiVersion"`
				Metadata   objectMeta `json:"metadata"`
			}
			if err := json.Unmarshal(ev.Object, &o); err != nil {
				continue
			}
			item := cache.Item{Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Raw: ev.Object}
			switch {
			case !initial:
				switch typ := cache.EventType(ev.Type); typ {
				case cache.Added, cache.Modified, cache.Deleted, cache.Bookmark:
					ops <- cacheOp{event: cache.Event{Type: typ, Item: item, ResourceVersion: o.Metadata.ResourceVersion}}
				}
			case ev.Type == "BOOKMARK" && o.Metadata.Annotations[initialEventsEnd] == "true":
				ops <- cacheOp{replace: &cache.ListMeta{ResourceVersion: o.Metadata.ResourceVersion, Kind: o.Kind + "List", APIVersion: o.APIVersion}, items: items}
				initial, items = false, nil
			case ev.Type == string(cache.Added):
				items = append(items, item)
			}
		}
	}()
}

// cacheOp is a watch event for the cache, or (replace set) the complete
// list a watch-list delivered.
type cacheOp struct {
	event   cache.Event
	replace *cache.ListMeta
	items   []cache.Item
}

// maxBatch bounds the events written in one transaction.
const maxBatch = 512

// writeCache applies ops in order, batching the events that queue up.
func (p *Proxy) writeCache(k cache.Key, ops <-chan cacheOp) {
	var batch []cache.Event
	flush := func() {
		if len(batch) > 0 {
			_ = p.cfg.Cache.ApplyEvents(k, batch)
			batch = batch[:0]
		}
	}
	for op := range ops {
		for {
			if op.replace != nil {
				flush()
				_ = p.cfg.Cache.ReplaceList(k, *op.replace, op.items)
			} else {
				batch = append(batch, op.event)
			}
			if len(batch) >= maxBatch {
				break
			}
			var more bool
			select {
			case op, more = <-ops:
				if !more {
					flush()
					return
				}
				continue
			default:
			}
			break
		}
		flush()
	}
}

type teeBody struct {
	io.ReadCloser
	tee  io.Reader
	pw   *io.PipeWriter
	lost func(error)
}

// Read ends the client's stream cleanly when the cloud's breaks: the client
// sees a watch that ended and watches again (held by the hub while offline),
// instead of a reset stream.
func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.tee.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.lost(err)
		return n, io.EOF
	}
	return n, err
}

func (b *teeBody) Close() error {
	_ = b.pw.Close()
	return b.ReadCloser.Close()
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
