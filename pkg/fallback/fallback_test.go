package fallback

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/abboot/abboot/pkg/atomicfile"
	"github.com/abboot/abboot/pkg/slot"
)

func espDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestWhich(t *testing.T) {
	big := string(make([]byte, 3<<20)) + "x"
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  slot.Slot
		ok    bool
	}{
		{"a", map[string]string{"EFI/abboot/a.efi": "v1", "EFI/abboot/b.efi": "v2", slot.FallbackPath: "v1"}, slot.A, true},
		{"b", map[string]string{"EFI/abboot/a.efi": "v1", "EFI/abboot/b.efi": "v2", slot.FallbackPath: "v2"}, slot.B, true},
		{"big, differing at the end", map[string]string{"EFI/abboot/a.efi": big[:len(big)-1] + "y", "EFI/abboot/b.efi": big, slot.FallbackPath: big}, slot.B, true},
		{"neither", map[string]string{"EFI/abboot/a.efi": "v1", "EFI/abboot/b.efi": "v2", slot.FallbackPath: "v3"}, "", false},
		{"missing", map[string]string{"EFI/abboot/a.efi": "v1"}, "", false},
		{"same image in both", map[string]string{"EFI/abboot/a.efi": "v1", "EFI/abboot/b.efi": "v1", slot.FallbackPath: "v1"}, slot.A, true},
	} {
		got, ok, _ := Which(os.DirFS(espDir(t, tc.files)))
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: Which = %s, %v; want %s, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestReplace(t *testing.T) {
	dir := espDir(t, map[string]string{"EFI/abboot/a.efi": "v1", "EFI/abboot/b.efi": "v2", slot.FallbackPath: "v1"})
	before, err := os.Stat(filepath.Join(dir, slot.FallbackPath))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} { // the second call has nothing to do
		wrote, err := Replace(dir, slot.B)
		if err != nil || wrote != want {
			t.Fatalf("Replace #%d = %v, %v; want %v", i+1, wrote, err, want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, slot.FallbackPath)); string(b) != "v2" {
		t.Errorf("fallback copy holds %q, want v2", b)
	}
	// Rule 5: replaced atomically, by a rename over the old copy, never
	// rewritten in place (a cut would leave half a UKI).
	if after, err := os.Stat(filepath.Join(dir, slot.FallbackPath)); err != nil || os.SameFile(before, after) {
		t.Errorf("the fallback copy was rewritten in place, not replaced by a new file (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, atomicfile.TempPath(slot.FallbackPath))); err == nil {
		t.Error("temporary file left behind")
	}
	if _, err := Replace(espDir(t, map[string]string{"EFI/abboot/a.efi": "v1"}), slot.B); err == nil {
		t.Error("Replace from a missing UKI succeeded")
	}
}
