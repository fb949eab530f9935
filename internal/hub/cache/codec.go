package cache

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// Objects are stored zstd-compressed: Kubernetes JSON repeats its keys in
// every object and compresses about fivefold, and every page of the file the
// hub reads is memory the node pays for.
var (
	encoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(1<<17))
	decoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxMemory(64<<20))
)

func compress(raw []byte) []byte { return encoder.EncodeAll(raw, make([]byte, 0, len(raw)/4+16)) }

func decompress(v []byte) ([]byte, error) {
	out, err := decoder.DecodeAll(v, nil)
	if err != nil {
		return nil, fmt.Errorf("cached value: %w", err)
	}
	return out, nil
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
