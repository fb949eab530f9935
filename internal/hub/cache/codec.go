package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Objects are stored zstd-compressed: Kubernetes JSON repeats its keys in
// every object, and every page of the file the hub reads is memory the node
// pays for. Encoders and decoders (a quarter MiB of state each) live in
// pools, so an idle hub holds none: the garbage collector empties a pool
// that went unused over two cycles.
var (
	encoders = sync.Pool{New: func() any {
		e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(1<<17))
		return e
	}}
	decoders = sync.Pool{New: func() any {
		d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxMemory(64<<20))
		return d
	}}
)

func compress(raw []byte) []byte {
	e := encoders.Get().(*zstd.Encoder)
	defer encoders.Put(e)
	return e.EncodeAll(raw, make([]byte, 0, len(raw)/4+16))
}

func decompress(v []byte) ([]byte, error) {
	d := decoders.Get().(*zstd.Decoder)
	defer decoders.Put(d)
	out, err := d.DecodeAll(v, nil)
	if err != nil {
		return nil, fmt.Errorf("cached value: %w", err)
	}
	return out, nil
}

// encodeItem stores a list's item: its length, as a uvarint, then the
// compressed object. The lengths let a protobuf list be answered with its
// size up front without decompressing it twice (ListMeta.ItemBytes).
func encodeItem(raw []byte) []byte {
	out := binary.AppendUvarint(nil, uint64(len(raw)))
	return append(out, compress(raw)...)
}

// itemLength is the length of a stored item's object, uncompressed, and
// the size of its uvarint.
func itemLength(v []byte) (uint64, int, error) {
	n, size := binary.Uvarint(v)
	if size <= 0 {
		return 0, 0, errors.New("cached item: length truncated")
	}
	return n, size, nil
}

func decodeItem(v []byte) ([]byte, error) {
	n, size, err := itemLength(v)
	if err != nil {
		return nil, err
	}
	raw, err := decompress(v[size:])
	if err == nil && uint64(len(raw)) != n {
		err = fmt.Errorf("cached item: %d bytes, its length says %d", len(raw), n)
	}
	return raw, err
}

// encodeObject stores a GET answer: its resource version, length-prefixed,
// then the compressed body.
func encodeObject(resourceVersion string, raw []byte) []byte {
	out := binary.AppendUvarint(nil, uint64(len(resourceVersion)))
	out = append(out, resourceVersion...)
	return append(out, compress(raw)...)
}

func decodeObject(v []byte) (string, []byte, error) {
	n, size := binary.Uvarint(v)
	if size <= 0 || uint64(len(v)-size) < n {
		return "", nil, errors.New("cached object: resource version truncated")
	}
	raw, err := decompress(v[size+int(n):])
	return string(v[size : size+int(n)]), raw, err
}
