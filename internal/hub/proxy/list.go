package proxy

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/hub/cache"
	"github.com/sitegrid/sitegrid/internal/hub/kubeproto"
)

// teeList passes a LIST answer to the client as it arrives while the hub
// decodes its items one by one into a staged list, off the client's path. A
// watch the client starts next writes its events only after the list is in
// place (the key's lock).
func (p *Proxy) teeList(resp *http.Response, k cache.Key) {
	w, err := p.cfg.Cache.BeginList(k)
	if err != nil {
		klog.V(2).InfoS("list not cached", "key", k.String(), "err", err)
		return
	}
	pipe := newChunkPipe()
	gzipped := resp.Header.Get("Content-Encoding") == "gzip"
	unlock := p.keys.lock(k.Bytes())
	resp.Body = &streamTee{ReadCloser: resp.Body, tee: io.TeeReader(resp.Body, pipe), pipe: pipe}
	go func() {
		defer unlock()
		defer pipe.CloseRead()
		cached, _ := p.cfg.Cache.Meta(k)
		var body io.Reader = pipe
		if gzipped {
			zr, err := gzip.NewReader(pipe)
			if err != nil {
				w.Abort()
				return
			}
			body = zr
		}
		decode := decodeList
		if k.Encoding == cache.EncodingProtobuf {
			decode = decodeProtoList
		}
		if err := decode(body, w, cached.ResourceVersion); err != nil {
			w.Abort()
		}
		p.release.releaseAfterLargeList(w.Received())
	}()
}

// streamTee copies what the client reads into a chunkPipe.
type streamTee struct {
	io.ReadCloser
	tee  io.Reader
	pipe *chunkPipe
	once sync.Once
	// lost, when set, hears of a stream the cloud broke; the client then
	// sees a clean end instead of a reset.
	lost func(error)
}

func (t *streamTee) Read(p []byte) (int, error) {
	n, err := t.tee.Read(p)
	if err != nil {
		t.once.Do(t.pipe.CloseWrite)
		if t.lost != nil && !errors.Is(err, io.EOF) {
			t.lost(err)
			return n, io.EOF
		}
	}
	return n, err
}

// Close before the end (the client went away) leaves the decoder a cut-off
// stream: it drops what it staged.
func (t *streamTee) Close() error {
	t.once.Do(t.pipe.CloseWrite)
	return t.ReadCloser.Close()
}

// errListUnchanged stops decoding a list the cache holds at the same
// resource version already.
var errListUnchanged = errors.New("list unchanged")

// decodeList reads a JSON list answer and stores it through w, unless it
// is at cachedVersion, which the cache holds already.
func decodeList(r io.Reader, w *cache.ListWriter, cachedVersion string) error {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	var meta cache.ListMeta
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case "kind":
			err = dec.Decode(&meta.Kind)
		case "apiVersion":
			err = dec.Decode(&meta.APIVersion)
		case "metadata":
			var m objectMeta
			if err = dec.Decode(&m); err == nil && m.ResourceVersion != "" && m.ResourceVersion == cachedVersion {
				return errListUnchanged
			}
			meta.ResourceVersion = m.ResourceVersion
		case "items":
			err = decodeItems(dec, w)
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return err
	}
	if meta.Kind == "" || meta.ResourceVersion == "" {
		return errors.New("list answer without kind or resourceVersion")
	}
	return w.Commit(meta)
}

// decodeProtoList is decodeList for a protobuf list answer.
func decodeProtoList(r io.Reader, w *cache.ListWriter, cachedVersion string) error {
	var meta cache.ListMeta
	err := kubeproto.ReadList(r, func(tm kubeproto.TypeMeta, rv string) error {
		if rv != "" && rv == cachedVersion {
			return errListUnchanged
		}
		meta = cache.ListMeta{ResourceVersion: rv, Kind: tm.Kind, APIVersion: tm.APIVersion}
		return nil
	}, func(raw []byte) error {
		stripped, m, err := kubeproto.Strip(raw)
		if err != nil {
			return err
		}
		return w.Add([]cache.Item{{Namespace: m.Namespace, Name: m.Name, Raw: stripped}})
	})
	if err != nil {
		return err
	}
	if meta.Kind == "" || meta.ResourceVersion == "" {
		return errors.New("list answer without kind or resourceVersion")
	}
	return w.Commit(meta)
}

func decodeItems(dec *json.Decoder, w *cache.ListWriter) error {
	if err := expectDelim(dec, '['); err != nil {
		return err
	}
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		it, _, err := itemOf(raw)
		if err != nil {
			return err
		}
		if err := w.Add([]cache.Item{it}); err != nil {
			return err
		}
	}
	return expectDelim(dec, ']')
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != want {
		return fmt.Errorf("list answer: want %q, got %v", want, tok)
	}
	return nil
}

// itemOf turns an object as the apiserver sent it into a cache item,
// without its managedFields: server-side apply's bookkeeping, which no node
// component reads and which is often the larger part of an object (an
// EndpointSlice's lists every endpoint again). Writes through the hub never
// use the cached copy, and an update that omits managedFields keeps the
// apiserver's.
func itemOf(raw []byte) (cache.Item, objectMeta, error) {
	var o struct {
		Metadata struct {
			objectMeta
			ManagedFields json.RawMessage `json:"managedFields"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return cache.Item{}, objectMeta{}, err
	}
	m := o.Metadata.objectMeta
	if len(o.Metadata.ManagedFields) > 0 {
		stripped, err := withoutManagedFields(raw)
		if err != nil {
			return cache.Item{}, m, err
		}
		raw = stripped
	}
	return cache.Item{Namespace: m.Namespace, Name: m.Name, Raw: raw}, m, nil
}

func withoutManagedFields(raw []byte) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, err
	}
	var md map[string]json.RawMessage
	if err := json.Unmarshal(top["metadata"], &md); err != nil {
		return nil, err
	}
	delete(md, "managedFields")
	var err error
	if top["metadata"], err = json.Marshal(md); err != nil {
		return nil, err
	}
	return json.Marshal(top)
}
