package proxy

import (
	"io"
	"runtime/debug"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/process"
)

// chunkPipe hands what the client reads to the hub's decoder without making
// the client wait for it: chunks are copied into a queue of bounded size,
// and only a decoder that falls that far behind slows the client down.
type chunkPipe struct {
	chunks chan []byte
	closed chan struct{}
	once   sync.Once
	rest   []byte
}

// maxQueuedChunks bounds a pipe's memory: HTTP bodies are read in chunks of
// at most 32 KiB, so 64 of them hold 2 MiB.
const maxQueuedChunks = 64

func newChunkPipe() *chunkPipe {
	return &chunkPipe{chunks: make(chan []byte, maxQueuedChunks), closed: make(chan struct{})}
}

// Write queues a copy of p; it never fails, and drops p once the reader
// gave up.
func (p *chunkPipe) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	select {
	case p.chunks <- append([]byte(nil), b...):
	case <-p.closed:
	}
	return len(b), nil
}

// CloseWrite ends the stream: the reader gets io.EOF after the queue.
func (p *chunkPipe) CloseWrite() { close(p.chunks) }

// CloseRead tells writers the reader is gone.
func (p *chunkPipe) CloseRead() { p.once.Do(func() { close(p.closed) }) }

func (p *chunkPipe) Read(b []byte) (int, error) {
	if len(p.rest) == 0 {
		chunk, ok := <-p.chunks
		if !ok {
			return 0, io.EOF
		}
		p.rest = chunk
	}
	n := copy(b, p.rest)
	p.rest = p.rest[n:]
	return n, nil
}

// keyLocks orders the writes of one cache key: a list being received and the
// events of a watch that follows it.
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	sync.Mutex
	users int
}

func (l *keyLocks) lock(key []byte) func() {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*keyLock{}
	}
	kl := l.locks[string(key)]
	if kl == nil {
		kl = &keyLock{}
		l.locks[string(key)] = kl
	}
	kl.users++
	l.mu.Unlock()
	kl.Lock()
	return func() {
		kl.Unlock()
		l.mu.Lock()
		if kl.users--; kl.users == 0 {
			delete(l.locks, string(key))
		}
		l.mu.Unlock()
	}
}

// copyBuffers are the reverse proxy's copy buffers: 8 KiB instead of its
// default 32 KiB, and pooled. Every open watch holds one for its lifetime,
// and a watch's events are small; an HTTP/2 frame is at most 16 KiB anyway.
var copyBuffers = &bufferPool{sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}}

type bufferPool struct{ sync.Pool }

func (p *bufferPool) Get() []byte  { return *p.Pool.Get().(*[]byte) }
func (p *bufferPool) Put(b []byte) { p.Pool.Put(&b) }

// memoryReleaser hands the memory a large list passed through back to the
// system shortly after the last one, instead of leaving it to the runtime's
// gradual scavenger: the hub's live heap is small, and on an edge node the
// difference is most of its resident memory. It also drops the hub's
// mapping of the cache file pages such a list wrote or read. Collecting only
// after large lists keeps the cost off ordinary requests.
type memoryReleaser struct {
	// release does the work (freeMemory); after is how long lists must
	// stop coming first.
	release func()
	after   time.Duration

	mu    sync.Mutex
	timer *time.Timer
}

// largeList is the size from which a list triggers a release.
const largeList = 1 << 20

// releaseAfterLargeList schedules a release, postponed while lists keep
// coming (an informer sync lists several resources in a row).
func (m *memoryReleaser) releaseAfterLargeList(size int64) {
	if size < largeList {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.timer != nil {
		m.timer.Stop()
	}
	m.timer = time.AfterFunc(m.after, m.release)
}

// freeMemory returns the Go heap's free memory to the system, drops the
// cache file's mapped pages, and hands back the executable's pages the sync
// touched once (process.ReleaseCodePages: they come back one by one as
// they are used).
func (p *Proxy) freeMemory() {
	debug.FreeOSMemory()
	if p.cfg.Cache != nil {
		if err := p.cfg.Cache.ReleaseMapping(); err != nil {
			klog.V(2).InfoS("cache file pages not released", "err", err)
		}
	}
	if err := process.ReleaseCodePages(); err != nil {
		klog.V(2).InfoS("executable pages not released", "err", err)
	}
}
