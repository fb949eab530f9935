package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sitegrid/sitegrid/internal/hub/kubeproto"
)

// Store is the cache file. bbolt commits copy-on-write with a checksummed
// meta page and fsync, so a kill -9 or power cut at any moment leaves the
// last committed state readable.
type Store struct {
	db *bolt.DB
}

// stagingSeq numbers staged lists within a process; what a killed process
// staged is dropped on Open.
var stagingSeq atomic.Uint64

var (
	bucketLists   = []byte("lists")
	bucketObjects = []byte("objects")
	// bucketStaging holds lists being received; a list moves into
	// bucketLists once complete, so a cut-off LIST never replaces a good one.
	bucketStaging = []byte("staging")
	// bucketFormat records the file's format; a file of another format
	// (an older hub's) is emptied on Open: it is a cache.
	bucketFormat = []byte("format")
	formatKey    = []byte("version")
	// format 2: zstd-compressed values, objects as version + body; format
	// 3: keys name their encoding, items are length + compressed object.
	currentFormat = []byte("3")
	metaKey       = []byte{0} // sorts before every "namespace/name" item key
)

// ListMeta describes a cached list.
type ListMeta struct {
	// ResourceVersion is the last version synced from the cloud.
	ResourceVersion string `json:"resourceVersion"`
	// Kind and APIVersion of the list, for answering it.
	Kind       string `json:"kind,omitempty"`
	APIVersion string `json:"apiVersion,omitempty"`
	// Count is the number of items, kept in the same transaction as they are.
	Count int `json:"count"`
	// ItemBytes is the items' size uncompressed, and LengthBytes what
	// their lengths take as varints: what a protobuf list needs to write
	// its length before its items. Counted by StreamList when it reads the
	// list, not stored.
	ItemBytes   int64 `json:"-"`
	LengthBytes int64 `json:"-"`
}

// Item is one object of a list.
type Item struct {
	Namespace, Name string
	// Raw is the object as the apiserver sent it.
	Raw []byte
}

// EventType is the type of a watch event.
type EventType string

// Watch event types that change a list.
const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
)

// Open opens or creates the cache file; the file and its folder are
// readable by their owner only.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = db.Close()
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		drop := [][]byte{bucketStaging}
		if f := tx.Bucket(bucketFormat); f == nil || !bytes.Equal(f.Get(formatKey), currentFormat) {
			drop = [][]byte{bucketStaging, bucketLists, bucketObjects, bucketFormat}
		}
		for _, name := range drop {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		f, err := tx.CreateBucketIfNotExists(bucketFormat)
		if err != nil {
			return err
		}
		if err := f.Put(formatKey, currentFormat); err != nil {
			return err
		}
		for _, b := range [][]byte{bucketLists, bucketObjects, bucketStaging} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &Store{db: db}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

func itemKey(namespace, name string) []byte { return []byte(namespace + "/" + name) }

// ListWriter receives a list in batches, as it streams in from the cloud,
// so the hub never holds a whole list in memory. The list replaces the
// cached one only on Commit. A list that fits in one batch costs one
// transaction; a longer one is staged batch by batch and moved into place
// by the last.
type ListWriter struct {
	s       *Store
	k       Key
	id      []byte // of the staging slot, once the list outgrew one batch
	pending []Item
	size    int
	count   int
	// received counts the bytes of every item added.
	received int64
}

// Received is the size of the items added so far, in bytes.
func (w *ListWriter) Received() int64 { return w.received }

// Batch limits: a list is written in transactions of at most this many
// items or bytes.
const (
	batchItems = 1000
	batchBytes = 2 << 20
)

// BeginList starts receiving a list for k.
func (s *Store) BeginList(k Key) (*ListWriter, error) {
	if k.Verb != VerbList {
		return nil, fmt.Errorf("BeginList with a %s key", k.Verb)
	}
	return &ListWriter{s: s, k: k}, nil
}

// Add takes items; full batches are written to the staging slot.
func (w *ListWriter) Add(items []Item) error {
	for _, it := range items {
		w.pending = append(w.pending, it)
		w.size += len(it.Raw)
		w.received += int64(len(it.Raw))
		if len(w.pending) >= batchItems || w.size >= batchBytes {
			if err := w.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *ListWriter) flush() error {
	err := w.s.db.Update(func(tx *bolt.Tx) error {
		staging := tx.Bucket(bucketStaging)
		if w.id == nil {
			w.id = binary.BigEndian.AppendUint64(nil, stagingSeq.Add(1))
			slot, err := staging.CreateBucket(w.id)
			if err != nil {
				return err
			}
			if _, err := slot.CreateBucket(w.k.Bytes()); err != nil {
				return err
			}
		}
		return w.put(staging.Bucket(w.id).Bucket(w.k.Bytes()))
	})
	w.pending, w.size = w.pending[:0], 0
	return err
}

func (w *ListWriter) put(b *bolt.Bucket) error {
	for _, it := range w.pending {
		key := itemKey(it.Namespace, it.Name)
		if b.Get(key) == nil {
			w.count++
		}
		if err := b.Put(key, encodeItem(it.Raw)); err != nil {
			return err
		}
	}
	return nil
}

// Commit makes the received list the cached one, in one transaction.
func (w *ListWriter) Commit(meta ListMeta) error {
	return w.s.db.Update(func(tx *bolt.Tx) error {
		staging, lists := tx.Bucket(bucketStaging), tx.Bucket(bucketLists)
		name := w.k.Bytes()
		if lists.Bucket(name) != nil {
			if err := lists.DeleteBucket(name); err != nil {
				return err
			}
		}
		if w.id != nil {
			// MoveBucket moves the bucket as last committed: the rest of the
			// items and the metadata go in after the move.
			if err := staging.Bucket(w.id).MoveBucket(name, lists); err != nil {
				return err
			}
			if err := staging.DeleteBucket(w.id); err != nil {
				return err
			}
		} else if _, err := lists.CreateBucket(name); err != nil {
			return err
		}
		b := lists.Bucket(name)
		if err := w.put(b); err != nil {
			return err
		}
		meta.Count = w.count
		return putMeta(b, meta)
	})
}

// Abort drops what was received.
func (w *ListWriter) Abort() {
	w.pending = nil
	if w.id != nil {
		_ = w.s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketStaging).DeleteBucket(w.id) })
	}
}

// Meta returns a cached list's metadata.
func (s *Store) Meta(k Key) (ListMeta, error) {
	var meta ListMeta
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLists).Bucket(k.Bytes())
		if b == nil {
			return ErrNotCached
		}
		var err error
		meta, err = getMeta(b)
		return err
	})
	return meta, err
}

func putMeta(b *bolt.Bucket, meta ListMeta) error {
	data, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	return b.Put(metaKey, data)
}

func getMeta(b *bolt.Bucket) (ListMeta, error) {
	var meta ListMeta
	data := b.Get(metaKey)
	if data == nil {
		return meta, errors.New("cached list has no metadata")
	}
	return meta, json.Unmarshal(data, &meta)
}

// ErrNotCached means the cache holds nothing for the key.
var ErrNotCached = errors.New("not cached")

// Bookmark is the event type that only moves a list's resource version.
const Bookmark EventType = "BOOKMARK"

// Event is one watch event for ApplyEvents.
type Event struct {
	Type            EventType
	Item            Item
	ResourceVersion string
}

// ApplyEvents applies a burst of watch events in one transaction: one
// commit and fsync for all of them, each touching only its item.
func (s *Store) ApplyEvents(k Key, events []Event) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLists).Bucket(k.Bytes())
		if b == nil {
			return ErrNotCached
		}
		meta, err := getMeta(b)
		if err != nil {
			return err
		}
		for _, ev := range events {
			if err := applyEvent(b, &meta, ev); err != nil {
				return err
			}
		}
		return putMeta(b, meta)
	})
}

func applyEvent(b *bolt.Bucket, meta *ListMeta, ev Event) error {
	key := itemKey(ev.Item.Namespace, ev.Item.Name)
	switch ev.Type {
	case Added, Modified:
		had := b.Get(key) != nil
		if err := b.Put(key, encodeItem(ev.Item.Raw)); err != nil {
			return err
		}
		if !had {
			meta.Count++
		}
	case Deleted:
		if b.Get(key) != nil {
			if err := b.Delete(key); err != nil {
				return err
			}
			meta.Count--
		}
	case Bookmark:
	default:
		return fmt.Errorf("event type %q changes no list", ev.Type)
	}
	meta.ResourceVersion = ev.ResourceVersion
	return nil
}

// List returns a cached list, items ordered by namespace and name.
func (s *Store) List(k Key) (ListMeta, []Item, error) {
	var meta ListMeta
	var items []Item
	err := s.StreamList(k, func(m ListMeta) error {
		meta, items = m, make([]Item, 0, m.Count)
		return nil
	}, func(it Item) error {
		items = append(items, it)
		return nil
	})
	return meta, items, err
}

// streamChunk is how many items StreamList reads per read transaction: a
// slow reader never holds one open for long (a long read transaction would
// keep the file from growing for writers).
const streamChunk = 256

// StreamList hands a cached list's metadata to begin, then its items,
// ordered by namespace and name, to each, without holding the list in
// memory. The items are read in chunks; each item is its own copy.
func (s *Store) StreamList(k Key, begin func(ListMeta) error, each func(Item) error) error {
	var meta ListMeta
	var after []byte
	first := true
	for {
		var chunk []Item
		err := s.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketLists).Bucket(k.Bytes())
			if b == nil {
				return ErrNotCached
			}
			if first {
				var err error
				if meta, err = getMeta(b); err != nil {
					return err
				}
				if meta.ItemBytes, meta.LengthBytes, err = itemSizes(b); err != nil {
					return err
				}
			}
			c := b.Cursor()
			key, v := c.First()
			if after != nil {
				if key, v = c.Seek(after); key != nil && bytes.Equal(key, after) {
					key, v = c.Next()
				}
			}
			for ; key != nil && len(chunk) < streamChunk; key, v = c.Next() {
				if len(key) == 1 && key[0] == 0 {
					continue
				}
				ns, name, err := splitItemKey(key)
				if err != nil {
					return err
				}
				raw, err := decodeItem(v)
				if err != nil {
					return err
				}
				chunk = append(chunk, Item{Namespace: ns, Name: name, Raw: raw})
				after = append(after[:0], key...)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if first {
			if err := begin(meta); err != nil {
				return err
			}
			first = false
		}
		for _, it := range chunk {
			if err := each(it); err != nil {
				return err
			}
		}
		if len(chunk) < streamChunk {
			return nil
		}
	}
}

// itemSizes adds up the lengths of a list's items, which lead their
// stored values: no item is decompressed.
func itemSizes(b *bolt.Bucket) (items, lengths int64, err error) {
	c := b.Cursor()
	for key, v := c.First(); key != nil; key, v = c.Next() {
		if len(key) == 1 && key[0] == 0 {
			continue
		}
		n, size, err := itemLength(v)
		if err != nil {
			return 0, 0, err
		}
		items, lengths = items+int64(n), lengths+int64(size)
	}
	return items, lengths, nil
}

func splitItemKey(key []byte) (string, string, error) {
	for i, c := range key {
		if c == '/' {
			return string(key[:i]), string(key[i+1:]), nil
		}
	}
	return "", "", fmt.Errorf("cached item key %q has no '/'", key)
}

// PutObject stores the answer of a GET (of an object or a discovery
// document).
func (s *Store) PutObject(k Key, resourceVersion string, raw []byte) error {
	if k.Verb == VerbList {
		return fmt.Errorf("PutObject with a %s key", k.Verb)
	}
	// Most GETs return what is already stored: a read costs no commit and
	// no fsync, so only a changed answer is written.
	if rv, have, err := s.Object(k); err == nil && rv == resourceVersion && bytes.Equal(have, raw) {
		return nil
	}
	data := encodeObject(resourceVersion, raw)
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketObjects).Put(k.Bytes(), data) })
}

// Object returns the stored answer of a GET.
func (s *Store) Object(k Key) (string, []byte, error) {
	var rv string
	var raw []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucketObjects).Get(k.Bytes())
		if data == nil {
			return ErrNotCached
		}
		var err error
		rv, raw, err = decodeObject(data)
		return err
	})
	return rv, raw, err
}

// ObjectKeys lists the keys of the stored objects of one verb (the pod
// statuses waiting for the cloud).
func (s *Store) ObjectKeys(verb string) ([]Key, error) {
	var out []Key
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketObjects).ForEach(func(kb, _ []byte) error {
			k, err := ParseKey(kb)
			if err == nil && k.Verb == verb {
				out = append(out, k)
			}
			return nil
		})
	})
	return out, err
}

// DeleteObject removes a stored object; one that is not there is no error.
func (s *Store) DeleteObject(k Key) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketObjects).Delete(k.Bytes()) })
}

// Check verifies the whole file: every list's metadata parses and its count
// matches its items, every item and object decodes.
func (s *Store) Check() error {
	return s.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketLists).ForEachBucket(func(name []byte) error {
			k, err := ParseKey(name)
			if err != nil {
				return err
			}
			b := tx.Bucket(bucketLists).Bucket(name)
			meta, err := getMeta(b)
			if err != nil {
				return fmt.Errorf("list %s: %w", k, err)
			}
			n := 0
			if err := b.ForEach(func(key, v []byte) error {
				if len(key) == 1 && key[0] == 0 {
					return nil
				}
				n++
				raw, err := decodeItem(v)
				if err == nil {
					err = validItem(k.Encoding, raw)
				}
				if err != nil {
					return fmt.Errorf("list %s: item %s: %w", k, key, err)
				}
				return nil
			}); err != nil {
				return err
			}
			if n != meta.Count {
				return fmt.Errorf("list %s: %d items, metadata says %d", k, n, meta.Count)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketObjects).ForEach(func(key, v []byte) error {
			k, err := ParseKey(key)
			if err != nil {
				return err
			}
			_, raw, err := decodeObject(v)
			if err == nil && k.Encoding == EncodingProtobuf {
				_, _, err = kubeproto.Unwrap(raw)
			} else if err == nil && !json.Valid(raw) {
				err = errors.New("not JSON")
			}
			if err != nil {
				return fmt.Errorf("object %x: %w", key, err)
			}
			return nil
		})
	})
}

// validItem checks that a list's item is an object of its encoding.
func validItem(encoding string, raw []byte) error {
	if encoding == EncodingProtobuf {
		_, _, err := kubeproto.Strip(raw)
		return err
	}
	if !json.Valid(raw) {
		return errors.New("not JSON")
	}
	return nil
}
