package fetch

import "sync"

// Ahead keeps the bytes of the last read ahead of a stream (a ReadAt of a
// download, or of a delta source), so that the stream takes them when it
// gets there instead of fetching them a second time: under Secure Boot
// the installer reads a bundle's UKI, its last payload, ahead of the
// stream to check it before any write. What is taken is checked again by
// the bundle reader like any other byte of the stream. The zero value
// keeps nothing; it is safe for concurrent use.
type Ahead struct {
	mu  sync.Mutex
	off int64
	b   []byte
}

// Keep remembers b as the bytes at off, instead of what it kept before.
// b must not be changed afterwards.
func (a *Ahead) Keep(off int64, b []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.off, a.b = off, b
}

// Has says whether the bytes kept cover the n bytes at off.
func (a *Ahead) Has(off, n int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.has(off, n)
}

func (a *Ahead) has(off, n int64) bool {
	return a.b != nil && off >= a.off && off+n <= a.off+int64(len(a.b))
}

// Take returns the n bytes at off and forgets them, if the bytes kept
// cover them all; nil otherwise.
func (a *Ahead) Take(off, n int64) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.has(off, n) {
		return nil
	}
	b := a.b[off-a.off : off-a.off+n]
	a.b = nil
	return b
}

// start returns where the bytes kept begin, and false when none are kept.
func (a *Ahead) start() (int64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.off, a.b != nil
}
