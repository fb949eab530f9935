package cache

import (
	"golang.org/x/sys/unix"
)

// ReleaseMapping drops the process's mapping of the cache file's pages.
// bbolt reads the file through a read-only shared mapping, so every page a
// large list wrote or read stays in the hub's resident memory until the
// kernel reclaims it; after this, the pages remain in the page cache (the
// kernel's to keep or drop) and are mapped again when next read. A read
// transaction is held meanwhile, so bbolt cannot remap the file under it.
func (s *Store) ReleaseMapping() error {
	tx, err := s.db.Begin(false)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	size := tx.Size() // what is mapped of the file: its pages up to the high-water mark
	if size <= 0 {
		return nil
	}
	// madvise through the raw system call: the address is bbolt's mapping,
	// which Go's memory model does not know as an object.
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, s.db.Info().Data, uintptr(size), unix.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}
