package proxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/topology"
)

// filterCtx carries a response's topology transform.
type filterCtx struct{}

// filtered rewrites a JSON answer object by object as it streams through: a
// list item by item, a watch event by event. Nothing is dropped or held back
// for a slow reader: the rewrite waits for the client, and the upstream
// waits for the rewrite.
func filtered(body io.ReadCloser, watch bool, t topology.Transform) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		var err error
		if watch {
			err = rewriteWatch(body, pw, t)
		} else {
			err = rewriteList(body, pw, t)
		}
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

// rewriteList copies a JSON list, passing each item through t.
func rewriteList(r io.Reader, w io.Writer, t topology.Transform) error {
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
			item, err := t(item)
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
func rewriteWatch(r io.Reader, w io.Writer, t topology.Transform) error {
	dec := json.NewDecoder(r)
	enc := json.NewEncoder(w)
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch cache.EventType(ev.Type) {
		case cache.Added, cache.Modified, cache.Deleted:
			obj, err := t(ev.Object)
			if err != nil {
				return err
			}
			ev.Object = obj
		}
		if err := enc.Encode(ev); err != nil {
			return err
		}
	}
}
