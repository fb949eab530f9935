package kubeproto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
)

// maxObject bounds one object or metadata field read from a stream, so a
// malformed length cannot make the hub allocate without limit (etcd stores
// objects of 1.5 MiB at most).
const maxObject = 64 << 20

// ReadList reads an encoded list as it arrives: head gets its type and
// resource version (before any item: the apiserver writes the list's
// metadata first), item each item's message, a fresh slice the callee
// keeps. The list is never held whole.
func ReadList(r io.Reader, head func(tm TypeMeta, resourceVersion string) error, item func(raw []byte) error) error {
	s := &stream{br: bufio.NewReaderSize(r, 32<<10)}
	prefix, err := s.bytes(uint64(len(magic)))
	if err != nil {
		return fmt.Errorf("protobuf list: %w", err)
	}
	if string(prefix) != string(magic) {
		return errors.New("protobuf list: no k8s magic prefix")
	}
	var tm TypeMeta
	sawBody := false
	for {
		num, typ, err := s.tag()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if num != unknownRaw || typ != protowire.BytesType {
			v, err := s.value(typ)
			if err != nil {
				return err
			}
			if num == unknownTypeMeta && typ == protowire.BytesType {
				if tm, err = typeMetaOf(v); err != nil {
					return fmt.Errorf("protobuf list: %w", err)
				}
			}
			continue
		}
		n, err := s.uvarint()
		if err != nil {
			return err
		}
		if err := s.listBody(n, tm, head, item); err != nil {
			return err
		}
		sawBody = true
	}
	if !sawBody {
		return errors.New("protobuf list: no list in the envelope")
	}
	return nil
}

// listBody reads n bytes of a list message: its ListMeta, then its items.
func (s *stream) listBody(n uint64, tm TypeMeta, head func(TypeMeta, string) error, item func([]byte) error) error {
	end := s.read + n
	headed := false
	for s.read < end {
		num, typ, err := s.tag()
		if err != nil {
			return truncated(err)
		}
		if typ != protowire.BytesType || (num != objectMetadata && num != listItems) {
			if _, err := s.value(typ); err != nil {
				return truncated(err)
			}
			continue
		}
		size, err := s.uvarint()
		if err != nil {
			return truncated(err)
		}
		v, err := s.bytes(size)
		if err != nil {
			return truncated(err)
		}
		if num == objectMetadata {
			rv := ""
			if err := eachField(v, func(f field) error {
				if f.num == listMetaResourceVersion && f.typ == protowire.BytesType {
					rv = string(f.value)
				}
				return nil
			}); err != nil {
				return fmt.Errorf("protobuf list metadata: %w", err)
			}
			if err := head(tm, rv); err != nil {
				return err
			}
			headed = true
			continue
		}
		if !headed {
			return errors.New("protobuf list: an item before the list's metadata")
		}
		if err := item(v); err != nil {
			return err
		}
	}
	if s.read != end {
		return errors.New("protobuf list: a field runs past the list's end")
	}
	if !headed {
		return errors.New("protobuf list: no list metadata")
	}
	return nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ListHeader is the start of an encoded list of count items whose messages
// are itemBytes long together, and their length prefixes (each item's
// length as a varint) lengthBytes: the envelope and the list's metadata;
// total is the whole list's size. Each item follows as AppendItem writes
// it.
func ListHeader(tm TypeMeta, resourceVersion string, count int, itemBytes, lengthBytes int64) (head []byte, total int64) {
	lm := protowire.AppendTag(nil, listMetaResourceVersion, protowire.BytesType)
	lm = protowire.AppendString(lm, resourceVersion)
	meta := protowire.AppendTag(nil, objectMetadata, protowire.BytesType)
	meta = protowire.AppendBytes(meta, lm)
	itemTag := int64(protowire.SizeTag(listItems))
	body := int64(len(meta)) + int64(count)*itemTag + lengthBytes + itemBytes

	out := append([]byte(nil), magic...)
	out = appendTypeMeta(out, tm)
	out = protowire.AppendTag(out, unknownRaw, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(body))
	return append(out, meta...), int64(len(out)) + body
}

// AppendItem appends one item of a list ListHeader began.
func AppendItem(out, raw []byte) []byte {
	out = protowire.AppendTag(out, listItems, protowire.BytesType)
	return protowire.AppendBytes(out, raw)
}

// stream reads protobuf fields from a reader, counting what it read.
type stream struct {
	br   *bufio.Reader
	read uint64
}

func (s *stream) ReadByte() (byte, error) {
	b, err := s.br.ReadByte()
	if err == nil {
		s.read++
	}
	return b, err
}

func (s *stream) uvarint() (uint64, error) {
	start := s.read
	v, err := binary.ReadUvarint(s)
	if err != nil && s.read > start && errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return v, err
}

// tag reads a field's tag; io.EOF only at a clean end between fields.
func (s *stream) tag() (protowire.Number, protowire.Type, error) {
	v, err := s.uvarint()
	if err != nil {
		return 0, 0, err
	}
	num, typ := protowire.DecodeTag(v)
	if num < protowire.MinValidNumber {
		return 0, 0, errors.New("protobuf: invalid field number")
	}
	return num, typ, nil
}

func (s *stream) bytes(n uint64) ([]byte, error) {
	if n > maxObject {
		return nil, fmt.Errorf("protobuf: a field of %d bytes, more than %d", n, maxObject)
	}
	b := make([]byte, n)
	m, err := io.ReadFull(s.br, b)
	s.read += uint64(m)
	return b, truncated(err)
}

// value reads the value of a field of wire type typ; a length-delimited
// one's content is returned.
func (s *stream) value(typ protowire.Type) ([]byte, error) {
	switch typ {
	case protowire.VarintType:
		_, err := s.uvarint()
		return nil, truncated(err)
	case protowire.Fixed32Type:
		return s.bytes(4)
	case protowire.Fixed64Type:
		return s.bytes(8)
	case protowire.BytesType:
		n, err := s.uvarint()
		if err != nil {
			return nil, truncated(err)
		}
		return s.bytes(n)
	}
	return nil, fmt.Errorf("protobuf: wire type %d not expected here", typ)
}
