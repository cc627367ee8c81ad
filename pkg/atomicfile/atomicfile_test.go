package atomicfile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/afero"

	"github.com/abboot/abboot/internal/powercut"
)

func TestWriteFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		old  *string // nil: no file before
		perm os.FileMode
	}{
		{"new", nil, 0o644},
		{"replace", ptr("old content, longer than the new"), 0o600},
		{"replace empty", ptr(""), 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			if tc.old != nil {
				if err := os.WriteFile(path, []byte(*tc.old), 0o666); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteFile(afero.NewOsFs(), path, []byte("new"), tc.perm); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(path); err != nil || string(b) != "new" {
				t.Errorf("content %q, %v; want new", b, err)
			}
			// What OpenFile makes of perm under this process's umask.
			ref := filepath.Join(dir, "ref")
			os.Remove(ref)
			rf, err := os.OpenFile(ref, os.O_CREATE|os.O_WRONLY, tc.perm)
			if err != nil {
				t.Fatal(err)
			}
			rf.Close()
			want, _ := os.Stat(ref)
			if fi, err := os.Stat(path); err != nil || fi.Mode() != want.Mode() {
				t.Errorf("mode %v, %v; want %v", fi.Mode(), err, want.Mode())
			}
			if _, err := os.Stat(TempPath(path)); !os.IsNotExist(err) {
				t.Errorf("temporary file left: %v", err)
			}
		})
	}
	if err := WriteFile(afero.NewOsFs(), filepath.Join(t.TempDir(), "no", "f"), nil, 0o644); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
}

func TestAbort(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Create(afero.NewOsFs(), path, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("new"))
	f.Abort()
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("after Abort: %q, want old", b)
	}
	if _, err := os.Stat(TempPath(path)); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
	if err := f.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
}

// TestPowerCut replaces a file with the power cut after every write, in
// every powercut.Mode: the file must hold the old or the new content,
// never anything else, and once WriteFile returned, the new content
// survives a cut right after.
func TestPowerCut(t *testing.T) {
	for _, mode := range powercut.Modes {
		for left := 0; ; left++ {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "f"), []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			pw := &powercut.Power{Left: left, Mode: mode}
			err := WriteFile(pw.FS(afero.NewBasePathFs(afero.NewOsFs(), dir)), "/f", []byte("new content"), 0o644)
			done := !pw.Cut()
			pw.Off()
			b, rerr := os.ReadFile(filepath.Join(dir, "f"))
			switch got := string(b); {
			case done && (err != nil || got != "new content"):
				t.Fatalf("%v: WriteFile returned %v, then a cut left %q, %v", mode, err, got, rerr)
			case !done && got != "old" && got != "new content":
				t.Fatalf("%v, cut after %d writes: %q, %v; want old or new", mode, left, got, rerr)
			}
			if done {
				break
			}
		}
	}
}

func ptr(s string) *string { return &s }
