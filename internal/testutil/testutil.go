// Package testutil holds the helpers tests share: running the real tools
// (sgdisk, cgpt, efibootmgr, mtools) and failing with the Debian package to
// install when one is missing, since CI installs them all; and an
// in-memory file.
package testutil

import (
	"io"
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
// B holds the contents; read it once the writers are done.
type MemFile struct {
	mu sync.Mutex
	B  []byte
}

// ReadAt reads from B, returning io.EOF past its end.
func (m *MemFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.B)) {
		return 0, io.EOF
	}
	n := copy(p, m.B[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes into B, growing it with zeros as needed.
func (m *MemFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(m.B)) {
		m.B = append(m.B, make([]byte, end-int64(len(m.B)))...)
	}
	return copy(m.B[off:], p), nil
}
