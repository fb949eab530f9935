package kubeproto

import (
	"encoding/binary"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of metav1.WatchEvent and runtime.RawExtension.
const (
	eventType   protowire.Number = 1
	eventObject protowire.Number = 2
	rawExtRaw   protowire.Number = 1
)

// ReadEvent reads one event of a protobuf watch stream: a frame (its length
// as 4 bytes, big-endian) holding a WatchEvent, whose object is an encoded
// object (Unwrap opens it).
func ReadEvent(r io.Reader) (string, []byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return "", nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > maxObject {
		return "", nil, fmt.Errorf("protobuf watch: a frame of %d bytes, more than %d", n, maxObject)
	}
	frame := make([]byte, n)
	if _, err := io.ReadFull(r, frame); err != nil {
		return "", nil, truncated(err)
	}
	var typ string
	var obj []byte
	err := eachField(frame, func(f field) error {
		switch {
		case f.typ != protowire.BytesType:
		case f.num == eventType:
			typ = string(f.value)
		case f.num == eventObject:
			return eachField(f.value, func(g field) error {
				if g.num == rawExtRaw && g.typ == protowire.BytesType {
					obj = g.value
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return "", nil, fmt.Errorf("protobuf watch event: %w", err)
	}
	return typ, obj, nil
}

// AppendEvent appends one framed watch event of type typ carrying the
// encoded object.
func AppendEvent(out []byte, typ string, object []byte) []byte {
	ext := protowire.AppendTag(nil, rawExtRaw, protowire.BytesType)
	ext = protowire.AppendBytes(ext, object)
	ev := protowire.AppendTag(nil, eventType, protowire.BytesType)
	ev = protowire.AppendString(ev, typ)
	ev = protowire.AppendTag(ev, eventObject, protowire.BytesType)
	ev = protowire.AppendBytes(ev, ext)
	out = binary.BigEndian.AppendUint32(out, uint32(len(ev)))
	return append(out, ev...)
}
