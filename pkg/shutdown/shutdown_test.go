package shutdown

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSystemd(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path string
		want       bool
	}{
		{"directory", dir, true},
		{"missing", filepath.Join(dir, "none"), false},
		{"file", file, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			old := runDir
			t.Cleanup(func() { runDir = old })
			runDir = c.path
			if got := Systemd(); got != c.want {
				t.Errorf("Systemd() with %s = %v, want %v", c.path, got, c.want)
			}
		})
	}
}
