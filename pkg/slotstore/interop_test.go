package slotstore

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/abboot/abboot/internal/testutil"
	"github.com/abboot/abboot/pkg/diskimage"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
)

// TestInteropCgpt checks the GPT store against ChromeOS cgpt (Debian
// package cgpt) on an image built by diskimage: what Save writes, cgpt
// shows; what `cgpt add -P -T -S` writes, Load reads, and cgpt keeps the
// counted marker (bit 61), which it does not know.
func TestInteropCgpt(t *testing.T) {
	testutil.RequireTool(t, "cgpt")
	path := filepath.Join(t.TempDir(), "disk.img")
	err := diskimage.Build(path, diskimage.Spec{
		ESPSizeMiB: diskimage.MinESPSizeMiB,
		Partitions: []diskimage.PartSpec{
			{Label: slot.A.RootLabel(), Type: gpt.TypeRootX86_64, SizeMiB: 1},
			{Label: slot.B.RootLabel(), Type: gpt.TypeRootX86_64, SizeMiB: 1},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Partition numbers: the ESP is 1.
	number := map[slot.Slot]string{slot.A: "2", slot.B: "3"}
	cgptShow := func(s slot.Slot, flag string) int {
		t.Helper()
		out := testutil.Run(t, "cgpt", "show", "-i", number[s], flag, path)
		v, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("cgpt show %s: %q", flag, out)
		}
		return v
	}
	g := mustGPT(t, path)
	for _, st := range states {
		if err := g.Save(st); err != nil {
			t.Fatal(err)
		}
		for _, s := range slot.All {
			a := st.Get(s)
			succ := 0
			if a.Successful {
				succ = 1
			}
			if p, tr, sc := cgptShow(s, "-P"), cgptShow(s, "-T"), cgptShow(s, "-S"); p != a.Priority || tr != a.Tries || sc != succ {
				t.Errorf("after Save(%+v), cgpt shows slot %s priority %d tries %d successful %d", st, s, p, tr, sc)
			}
		}
	}

	// cgpt add keeps the bits it does not own: the counted marker and
	// the crash counts.
	if err := g.Save(slotstate.State{A: slotstate.Attrs{Crashes: 2}, B: slotstate.Attrs{Crashes: 1}, Counted: slot.A}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		s           slot.Slot
		prio, tries string
		succ        string
		want        slotstate.State
	}{
		{slot.B, "5", "2", "0", slotstate.State{A: slotstate.Attrs{Crashes: 2}, B: slotstate.Attrs{Priority: 5, Tries: 2, Crashes: 1}, Counted: slot.A}},
		{slot.A, "15", "0", "1", slotstate.State{A: slotstate.Attrs{Priority: 15, Successful: true, Crashes: 2}, B: slotstate.Attrs{Priority: 5, Tries: 2, Crashes: 1}, Counted: slot.A}},
		{slot.B, "0", "15", "1", slotstate.State{A: slotstate.Attrs{Priority: 15, Successful: true, Crashes: 2}, B: slotstate.Attrs{Tries: 15, Successful: true, Crashes: 1}, Counted: slot.A}},
	} {
		testutil.Run(t, "cgpt", "add", "-i", number[tc.s], "-P", tc.prio, "-T", tc.tries, "-S", tc.succ, path)
		if got, err := g.Load(); err != nil || got != tc.want {
			t.Errorf("after cgpt add -i %s -P %s -T %s -S %s: Load = %+v, %v; want %+v", number[tc.s], tc.prio, tc.tries, tc.succ, got, err, tc.want)
		}
	}
	// cgpt writes both copies; they must agree for our Save to edit
	// without a repair.
	if tab, err := gpt.ReadFile(path); err != nil || tab.NeedsRepair() {
		t.Errorf("after cgpt add: %v", err)
	}
}
