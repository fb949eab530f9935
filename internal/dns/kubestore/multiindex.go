package kubestore

import "slices"

// multiIndex maps a key to the objects holding it. Nearly every key (an
// endpoint's address, a Service's IP) has one object: it is kept in a map
// of pointers, and only the keys of several objects have a list too, so
// 10,000 endpoints cost 10,000 map slots of a string and a pointer.
type multiIndex[T any] struct {
	first map[string]*T
	more  map[string][]*T
}

func newMultiIndex[T any]() multiIndex[T] {
	return multiIndex[T]{first: map[string]*T{}, more: map[string][]*T{}}
}

func (m multiIndex[T]) add(key string, v *T) {
	if _, ok := m.first[key]; !ok {
		m.first[key] = v
		return
	}
	m.more[key] = append(m.more[key], v)
}

// remove takes v out of key's objects.
func (m multiIndex[T]) remove(key string, v *T) {
	if m.first[key] == v {
		rest := m.more[key]
		if len(rest) == 0 {
			delete(m.first, key)
			return
		}
		m.first[key] = rest[0]
		m.setMore(key, rest[1:])
		return
	}
	m.setMore(key, slices.DeleteFunc(m.more[key], func(o *T) bool { return o == v }))
}

func (m multiIndex[T]) setMore(key string, vs []*T) {
	if len(vs) == 0 {
		delete(m.more, key)
		return
	}
	m.more[key] = vs
}

// get is a copy of key's objects, the first added first.
func (m multiIndex[T]) get(key string) []*T {
	v, ok := m.first[key]
	if !ok {
		return nil
	}
	return append([]*T{v}, m.more[key]...)
}
