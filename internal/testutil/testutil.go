// Package testutil holds the helpers tests share: running the real tools
// (sgdisk, cgpt, efibootmgr, mtools) and failing with the Debian package to
// install when one is missing, since CI installs them all; and an
// in-memory file or disk.
package testutil

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/abboot/abboot/pkg/tool"
)

// RequireTool fails the test when name is not installed.
func RequireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := tool.Path(name); err != nil {
		t.Fatal(err)
	}
}

// Run runs a tool and returns its output, failing the test on error.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := tool.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// MemFile is an in-memory file that grows on write, for code that takes an
// io.ReaderAt and io.WriterAt, such as verity.Format. It is safe for
// concurrent use, since Format writes from several goroutines at once.
// B holds the contents; read it once the writers are done. With Fixed set
// it is a disk instead: len(B) bytes, and a write past the end fails as it
// does on a block device (see NewDisk).
type MemFile struct {
	mu    sync.Mutex
	B     []byte
	Fixed bool
}

// NewDisk returns a zeroed disk of size bytes that does not grow.
func NewDisk(size int) *MemFile { return &MemFile{B: make([]byte, size), Fixed: true} }

// Clone returns a copy of m with its own contents, to keep a disk as it
// was before a test changes it.
func (m *MemFile) Clone() *MemFile {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &MemFile{B: slices.Clone(m.B), Fixed: m.Fixed}
}

// ReadAt reads from B, returning io.EOF past its end.
func (m *MemFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off >= int64(len(m.B)) {
		return 0, io.EOF
	}
	n := copy(p, m.B[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes into B, growing it with zeros as needed unless m is
// Fixed.
func (m *MemFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	end := off + int64(len(p))
	if off < 0 || m.Fixed && end > int64(len(m.B)) {
		return 0, fmt.Errorf("write of %d bytes at %d past the end of a %d-byte disk", len(p), off, len(m.B))
	}
	if end > int64(len(m.B)) {
		m.B = append(m.B, make([]byte, end-int64(len(m.B)))...)
	}
	return copy(m.B[off:], p), nil
}

// Sync does nothing: what is written to memory is as durable as a MemFile
// gets. (internal/powercut models what a cut loses.)
func (m *MemFile) Sync() error { return nil }
