package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/kubeproto"
	"github.com/sitegrid/sitegrid/internal/hub/topology"
)

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
	pipe := newChunkPipe()
	endpoint := endpointOf(resp.Request.URL)
	resp.Body = &streamTee{ReadCloser: resp.Body, tee: io.TeeReader(resp.Body, pipe), pipe: pipe,
		lost: func(err error) {
			if resp.Request.Context().Err() == nil { // the cloud, not the client, went away
				p.cfg.Upstream.Report(endpoint, err)
			}
		}}
	initial := resp.Request.URL.Query().Get("sendInitialEvents") == "true"
	ops := make(chan cache.Event, 128)
	go p.writeCache(k, ops)
	go func() {
		defer close(ops)
		defer pipe.CloseRead()
		var staged *cache.ListWriter
		defer func() {
			if staged != nil {
				staged.Abort()
			}
		}()
		next := eventReader(k.Encoding, pipe)
		for {
			evType, obj, err := next()
			if err != nil {
				return
			}
			typ := cache.EventType(evType)
			o, err := keep(k.Encoding, obj, initial && typ == cache.Bookmark)
			if err != nil {
				continue
			}
			item, m := o.item, o.meta
			if !initial {
				switch typ {
				case cache.Added, cache.Modified, cache.Deleted, cache.Bookmark:
					ops <- cache.Event{Type: typ, Item: item, ResourceVersion: m.ResourceVersion}
				}
				continue
			}
			// The initial events of a watch-list are the list: staged in
			// batches, committed at the bookmark that ends them.
			if staged == nil {
				if staged, err = p.cfg.Cache.BeginList(k); err != nil {
					return
				}
			}
			switch {
			case typ == cache.Bookmark && m.Annotations[initialEventsEnd] == "true":
				unlock := p.keys.lock(k.Bytes())
				_ = staged.Commit(cache.ListMeta{ResourceVersion: m.ResourceVersion, Kind: o.typ.Kind + "List", APIVersion: o.typ.APIVersion})
				unlock()
				p.release.releaseAfterLargeList(staged.Received())
				initial, staged = false, nil
			case typ == cache.Added:
				if err := staged.Add([]cache.Item{item}); err != nil {
					return
				}
			}
		}
	}()
}

// eventReader reads a watch stream's events in encoding: each call the next
// event's type and object (for protobuf, the object's envelope).
func eventReader(encoding string, r io.Reader) func() (string, []byte, error) {
	if encoding == cache.EncodingProtobuf {
		return func() (string, []byte, error) { return kubeproto.ReadEvent(r) }
	}
	dec := json.NewDecoder(r)
	return func() (string, []byte, error) {
		var ev watchEvent
		err := dec.Decode(&ev)
		return ev.Type, ev.Object, err
	}
}

// maxBatch bounds the events written in one transaction.
const maxBatch = 512

// writeCache applies events in order, writing the ones that queued up
// meanwhile in one transaction.
func (p *Proxy) writeCache(k cache.Key, events <-chan cache.Event) {
	batch := make([]cache.Event, 0, maxBatch)
	for ev := range events {
		batch = append(batch[:0], ev)
	drain:
		for len(batch) < maxBatch {
			select {
			case ev, ok := <-events:
				if !ok {
					break drain
				}
				batch = append(batch, ev)
			default:
				break drain
			}
		}
		unlock := p.keys.lock(k.Bytes())
		_ = p.cfg.Cache.ApplyEvents(k, batch)
		unlock()
	}
}

// bookmarkEvery is how often an offline watch sends a bookmark.
var bookmarkEvery = 10 * time.Second

// holdWatch keeps a watch open while the cloud is gone: no events, a
// bookmark at the cached resource version now and then if the client asked
// for bookmarks, and a clean end when the cloud is back, so the client
// re-lists once instead of in a loop.
func (p *Proxy) holdWatch(w http.ResponseWriter, r *http.Request, k cache.Key, t *topology.Transform) bool {
	meta, err := p.cfg.Cache.Meta(k)
	if err != nil {
		return false
	}
	w.Header().Set("Content-Type", contentType(k.Encoding, true))
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	bookmarks := r.URL.Query().Get("allowWatchBookmarks") == "true"
	proto := k.Encoding == cache.EncodingProtobuf
	itemType := func() kubeproto.TypeMeta {
		return kubeproto.TypeMeta{APIVersion: meta.APIVersion, Kind: strings.TrimSuffix(meta.Kind, "List")}
	}
	// send writes one event; a protobuf object is the item's message,
	// sent in its envelope.
	send := func(typ string, obj []byte) {
		var buf bytes.Buffer
		if proto {
			buf.Write(kubeproto.AppendEvent(nil, typ, kubeproto.Wrap(itemType(), obj)))
		} else {
			_ = json.NewEncoder(&buf).Encode(watchEvent{Type: typ, Object: obj})
		}
		_, _ = w.Write(buf.Bytes())
		if flusher != nil {
			flusher.Flush()
		}
	}
	bookmark := func(annotations map[string]string) {
		if proto {
			send("BOOKMARK", kubeproto.Stub(meta.ResourceVersion, annotations))
			return
		}
		md := map[string]any{"resourceVersion": meta.ResourceVersion}
		if annotations != nil {
			md["annotations"] = annotations
		}
		obj, _ := json.Marshal(map[string]any{"kind": itemType().Kind, "apiVersion": meta.APIVersion, "metadata": md})
		send("BOOKMARK", obj)
	}
	if r.URL.Query().Get("sendInitialEvents") == "true" {
		// A watch-list: the cached list as ADDED events, then the marked
		// bookmark that says the list is complete.
		err := p.cfg.Cache.StreamList(k, func(m cache.ListMeta) error {
			meta = m
			return nil
		}, func(it cache.Item) error {
			if t != nil {
				var err error
				if it.Raw, err = t.Apply(it.Raw); err != nil {
					return err
				}
			}
			send(string(cache.Added), it.Raw)
			return nil
		})
		if err != nil {
			panic(http.ErrAbortHandler) // never a partial list that looks complete
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
