package grid

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// hashCache maps grid UID -> generation and unit value -> desired hash.
type hashCache struct {
	mu    sync.Mutex
	grids map[types.UID]*gridHashes
	uids  map[types.NamespacedName]types.UID
}

type gridHashes struct {
	generation int64
	byValue    map[string]string
}

func (h *hashCache) get(uid types.UID, gen int64, value string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.grids[uid]
	if g == nil || g.generation != gen {
		return "", false
	}
	v, ok := g.byValue[value]
	return v, ok
}

func (h *hashCache) put(uid types.UID, gen int64, value, hash string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.grids == nil {
		h.grids = map[types.UID]*gridHashes{}
	}
	g := h.grids[uid]
	if g == nil || g.generation != gen {
		g = &gridHashes{generation: gen, byValue: map[string]string{}}
		h.grids[uid] = g
	}
	g.byValue[value] = hash
}

// remember ties a grid's name to its UID, so a deleted grid's entry can be
// dropped by name.
func (h *hashCache) remember(name types.NamespacedName, uid types.UID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.uids == nil {
		h.uids = map[types.NamespacedName]types.UID{}
	}
	if old, ok := h.uids[name]; ok && old != uid {
		delete(h.grids, old)
	}
	h.uids[name] = uid
}

func (h *hashCache) forgetName(name types.NamespacedName) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.grids, h.uids[name])
	delete(h.uids, name)
}
