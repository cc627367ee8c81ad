package powercut

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/afero"
)

// TestFile checks the page cache model on a disk image: what is synced
// stays, what is not is undone at the cut as the mode says.
func TestFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode Mode
		sync bool // after the first two writes
		want string
	}{
		{"synced", Lost, true, "ABCDefgh"},
		{"lost", Lost, false, "abcdefgh"},
		{"torn", Torn, false, "ABCDEfgh"}, // the cut write "EFG" lands half
		{"even", Even, false, "ABcdefgh"},
		{"odd", Odd, false, "abCDefgh"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk")
			if err := os.WriteFile(path, []byte("abcdefgh"), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			left := 2
			if tc.sync {
				left = 3
			}
			cf := &File{File: f, P: &Power{Left: left, Mode: tc.mode}}
			cf.WriteAt([]byte("AB"), 0)
			cf.WriteAt([]byte("CD"), 2)
			if tc.sync {
				if err := cf.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := cf.WriteAt([]byte("EFG"), 4); err != ErrCut {
				t.Fatalf("write after the cut: %v", err)
			}
			if b, _ := os.ReadFile(path); string(b) != tc.want {
				t.Errorf("after the cut: %q, want %q", b, tc.want)
			}
		})
	}
}

// TestFS checks the model on a file system: a file's data is durable when
// the file is synced, a rename or a new file when its directory is.
func TestFS(t *testing.T) {
	for _, tc := range []struct {
		name              string
		syncFile, syncDir bool
		want              map[string]string // "" absent
	}{
		{"nothing synced", false, false, map[string]string{"f": "old", "f.new": ""}},
		{"file synced, not the rename", true, false, map[string]string{"f": "old", "f.new": ""}},
		{"rename synced, not the data", false, true, map[string]string{"f": "", "f.new": ""}},
		{"both", true, true, map[string]string{"f": "new", "f.new": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "f"), []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			p := &Power{Left: 100}
			fsys := p.FS(afero.NewBasePathFs(afero.NewOsFs(), dir))
			f, err := fsys.OpenFile("f.new", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("new"))
			if tc.syncFile {
				f.Sync()
			}
			f.Close()
			if err := fsys.Rename("f.new", "f"); err != nil {
				t.Fatal(err)
			}
			if tc.syncDir {
				d, _ := fsys.Open("/")
				d.Sync()
				d.Close()
			}
			p.Off()
			for name, want := range tc.want {
				b, err := os.ReadFile(filepath.Join(dir, name))
				if want == "" && !os.IsNotExist(err) && (err != nil || len(b) > 0) {
					t.Errorf("%s: %q, %v; want it absent or empty", name, b, err)
				}
				if want != "" && string(b) != want {
					t.Errorf("%s: %q, %v; want %q", name, b, err, want)
				}
			}
		})
	}
}

// TestFSEntries checks that a remove and a mkdir not followed by a sync
// of their directory are undone.
func TestFSEntries(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &Power{Left: 100}
	fsys := p.FS(afero.NewBasePathFs(afero.NewOsFs(), dir))
	if err := fsys.Remove("f"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.MkdirAll("a/b", 0o755); err != nil {
		t.Fatal(err)
	}
	p.Off()
	if b, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(b) != "keep" {
		t.Errorf("removed file after the cut: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); !os.IsNotExist(err) {
		t.Errorf("directory made but not synced survives the cut: %v", err)
	}
}
