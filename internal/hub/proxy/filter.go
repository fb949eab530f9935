package proxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/topology"
)

// A filtered answer is rewritten object by object as it streams through: a
// list item by item, a watch event by event. Nothing is dropped or held back
// for a slow reader: the rewrite waits for the client, and the upstream
// waits for the rewrite.

// filteredList rewrites a JSON list answer.
func filteredList(body io.ReadCloser, t *topology.Transform) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		err := rewriteList(body, pw, t.Apply)
		_ = body.Close()
		_ = pw.CloseWithError(err)
	}()
	return &filteredBody{PipeReader: pr, upstream: body}
}

// filteredWatch rewrites a JSON watch stream, and when the topology rules
// change (a node joins or leaves the unit, a Service's keys change), sends
// the client the objects they concern again, filtered anew, as MODIFIED
// events at their current resource version: the client's view is corrected
// without restarting its watch.
func (p *Proxy) filteredWatch(body io.ReadCloser, k cache.Key, t *topology.Transform) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		err := p.rewriteWatch(body, pw, k, t)
		_ = body.Close()
		_ = pw.CloseWithError(err)
	}()
	return &filteredBody{PipeReader: pr, upstream: body}
}

type filteredBody struct {
	*io.PipeReader
	upstream io.Closer
}

// Close (the client went away) ends the rewrite and the upstream stream.
func (b *filteredBody) Close() error {
	_ = b.PipeReader.Close()
	return b.upstream.Close()
}

// rewriteList copies a JSON list, passing each item through apply.
func rewriteList(r io.Reader, w io.Writer, apply func([]byte) ([]byte, error)) error {
	dec := json.NewDecoder(r)
	out := bufio.NewWriterSize(w, 32<<10)
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	_ = out.WriteByte('{')
	for first := true; dec.More(); first = false {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		if !first {
			_ = out.WriteByte(',')
		}
		name, _ := json.Marshal(key)
		_, _ = out.Write(append(name, ':'))
		if key != "items" {
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return err
			}
			_, _ = out.Write(v)
			continue
		}
		if err := expectDelim(dec, '['); err != nil {
			return err
		}
		_ = out.WriteByte('[')
		for i := 0; dec.More(); i++ {
			var item json.RawMessage
			if err := dec.Decode(&item); err != nil {
				return err
			}
			item, err := apply(item)
			if err != nil {
				return err
			}
			if i > 0 {
				_ = out.WriteByte(',')
			}
			_, _ = out.Write(item)
		}
		if err := expectDelim(dec, ']'); err != nil {
			return err
		}
		_ = out.WriteByte(']')
	}
	if err := expectDelim(dec, '}'); err != nil {
		return err
	}
	_ = out.WriteByte('}')
	return out.Flush()
}

// rewriteWatch copies a JSON watch stream, passing each event's object
// through t; bookmarks and errors pass as they are. Each event is written
// as soon as it is rewritten.
func (p *Proxy) rewriteWatch(r io.Reader, w io.Writer, k cache.Key, t *topology.Transform) error {
	events := make(chan watchEvent)
	decodeErr := make(chan error, 1)
	go func() {
		defer close(events)
		dec := json.NewDecoder(r)
		for {
			var ev watchEvent
			if err := dec.Decode(&ev); err != nil {
				if !errors.Is(err, io.EOF) {
					decodeErr <- err
				}
				return
			}
			events <- ev
		}
	}()
	var changed <-chan struct{}
	var next func() topology.Change
	if signal, nextChange, cancel, ok := t.Subscribe(); ok && p.cfg.Cache != nil {
		defer cancel()
		changed, next = signal, nextChange
	}
	enc := json.NewEncoder(w)
	lastRV := ""
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				select {
				case err := <-decodeErr:
					return err
				default:
					return nil
				}
			}
			switch cache.EventType(ev.Type) {
			case cache.Added, cache.Modified, cache.Deleted:
				obj, err := t.Apply(ev.Object)
				if err != nil {
					return err
				}
				ev.Object = obj
			}
			if rv := eventRV(ev.Object); rv != "" {
				lastRV = rv
			}
			if err := enc.Encode(ev); err != nil {
				return err
			}
		case <-changed:
			if err := p.resend(enc, k, t, next(), lastRV); err != nil {
				return err
			}
		}
	}
}

// resend writes, as MODIFIED events, the cached objects a rule change
// concerns, filtered by the new rules. It first lets the cache catch up with
// what this stream has sent, so no object goes back to an older version.
func (p *Proxy) resend(enc *json.Encoder, k cache.Key, t *topology.Transform, c topology.Change, lastRV string) error {
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		meta, err := p.cfg.Cache.Meta(k)
		if err != nil || !olderThan(meta.ResourceVersion, lastRV) {
			break
		}
	}
	// Read in chunks, outside any transaction: a slow client holds nothing
	// up. An object may come newer than the stream has reached; the stream
	// then brings the same version again, which clients take as a no-op.
	err := p.cfg.Cache.StreamList(k, func(cache.ListMeta) error { return nil }, func(it cache.Item) error {
		if !t.Affected(it.Raw, c) {
			return nil
		}
		obj, err := t.Apply(it.Raw)
		if err != nil {
			return err
		}
		return enc.Encode(watchEvent{Type: string(cache.Modified), Object: obj})
	})
	if errors.Is(err, cache.ErrNotCached) {
		return nil // nothing cached for this watch: nothing to correct
	}
	return err
}

func eventRV(obj json.RawMessage) string {
	var o struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(obj, &o)
	return o.Metadata.ResourceVersion
}

// olderThan compares resource versions where both are numbers (etcd's);
// opaque ones are never older.
func olderThan(a, b string) bool {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	return errA == nil && errB == nil && x < y
}
