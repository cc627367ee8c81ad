package commit

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/abboot/abboot/pkg/bootentry"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/esp"
	"github.com/abboot/abboot/pkg/fallback"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
)

// TestCommit: B on trial, A committed, BootOrder and the fallback copy
// on A. Committing B changes all three; committing it again writes
// nothing.
func TestCommit(t *testing.T) {
	dir := t.TempDir()
	espDir, varsDir := filepath.Join(dir, "esp"), filepath.Join(dir, "vars")
	for p, content := range map[string]string{"EFI/abboot/a.efi": "uki a", "EFI/abboot/b.efi": "uki b", slot.FallbackPath: "uki a"} {
		os.MkdirAll(filepath.Join(espDir, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(espDir, p), []byte(content), 0o644)
	}
	os.Mkdir(varsDir, 0o755)
	vars := efivar.Open(varsDir)
	e := &esp.ESP{Part: gpt.Partition{Number: 1, FirstLBA: 2048, LastLBA: 4095, UUID: guid.MustParse("4c8fda8e-b864-4c13-85af-bb8a6dd496b0")}}
	if _, err := bootentry.Repair(vars, map[uint16]*efivar.LoadOption{}, e, slot.All); err != nil {
		t.Fatal(err)
	}
	store := slotstore.NewVar(vars)
	trial := slotstate.State{A: slotstate.Attrs{Priority: 1, Successful: true}, B: slotstate.Attrs{Priority: 2, Tries: 2}}
	if err := store.Save(trial); err != nil {
		t.Fatal(err)
	}

	for i, want := range [][]string{{"state", "BootOrder", "fallback"}, nil} {
		wrote, err := Commit(store, vars, espDir, slot.B, fallback.Replace)
		if err != nil || !slices.Equal(wrote, want) {
			t.Fatalf("Commit #%d wrote %q, %v; want %q", i+1, wrote, err, want)
		}
	}
	if st, err := store.Load(); err != nil || st != trial.Commit(slot.B) || !st.B.Successful {
		t.Errorf("state %+v, %v; want B committed", st, err)
	}
	entries, _ := vars.BootEntries()
	b, _ := bootentry.Find(entries, slot.B)
	if order, err := vars.BootOrder(); err != nil || len(order) == 0 || order[0] != b {
		t.Errorf("BootOrder %04X, %v; want Boot%04X first", order, err, b)
	}
	if s, ok, err := fallback.Which(os.DirFS(espDir)); err != nil || !ok || s != slot.B {
		t.Errorf("the fallback copy is slot %q's UKI (%v, %v), want b's", s, ok, err)
	}
}
