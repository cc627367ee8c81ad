package bootentry

import (
	"reflect"
	"testing"

	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/esp"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/slot"
)

var testESP = &esp.ESP{Part: gpt.Partition{Number: 1, FirstLBA: 2048, LastLBA: 526335, UUID: guid.MustParse("4c8fda8e-b864-4c13-85af-bb8a6dd496b0")}}

func other(desc, path string) *efivar.LoadOption {
	return &efivar.LoadOption{Attributes: efivar.LoadOptionActive, Description: desc, FilePath: efivar.DevicePath{efivar.FilePath{Path: path}}}
}

func TestWant(t *testing.T) {
	got := Want(testESP, slot.B).FilePath.String()
	if want := `HD(1,GPT,4c8fda8e-b864-4c13-85af-bb8a6dd496b0,0x800,0x80000)/File(\EFI\abboot\b.efi)`; got != want {
		t.Errorf("Want(B) = %s, want %s", got, want)
	}
}

func TestRepair(t *testing.T) {
	stale := Want(testESP, slot.A)
	stale.FilePath = efivar.DevicePath{efivar.FilePath{Path: `\EFI\abboot\a.efi`}} // ESP moved: no HD node
	for _, tc := range []struct {
		name      string
		entries   map[uint16]*efivar.LoadOption
		order     []uint16
		slots     []slot.Slot
		wantOrder []uint16
		changes   int
	}{
		{"fresh", nil, nil, []slot.Slot{slot.A, slot.B}, []uint16{0, 1}, 4},
		{"firmware entries kept behind", map[uint16]*efivar.LoadOption{0: other("UEFI Shell", `\shell.efi`)}, []uint16{0}, []slot.Slot{slot.B, slot.A}, []uint16{1, 2, 0}, 4},
		{"all right", map[uint16]*efivar.LoadOption{3: Want(testESP, slot.A), 4: Want(testESP, slot.B)}, []uint16{4, 3}, []slot.Slot{slot.A, slot.B}, []uint16{4, 3}, 0},
		{"stale path rewritten in place", map[uint16]*efivar.LoadOption{3: stale, 4: Want(testESP, slot.B)}, []uint16{3, 4}, []slot.Slot{slot.A, slot.B}, []uint16{3, 4}, 1},
		{"found by path", map[uint16]*efivar.LoadOption{7: other("renamed", `\EFI\ABBOOT\A.EFI`)}, []uint16{7}, []slot.Slot{slot.A}, []uint16{7}, 1},
		{"dropped from BootOrder", map[uint16]*efivar.LoadOption{3: Want(testESP, slot.A), 4: Want(testESP, slot.B)}, []uint16{3}, []slot.Slot{slot.A, slot.B}, []uint16{4, 3}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := efivar.Open(t.TempDir())
			for n, o := range tc.entries {
				if err := v.SetBootEntry(n, o); err != nil {
					t.Fatal(err)
				}
			}
			if tc.order != nil {
				v.SetBootOrder(tc.order)
			}
			entries, err := v.BootEntries()
			if err != nil {
				t.Fatal(err)
			}
			changes, err := Repair(v, entries, testESP, tc.slots)
			if err != nil {
				t.Fatal(err)
			}
			if len(changes) != tc.changes {
				t.Errorf("%d changes %v, want %d", len(changes), changes, tc.changes)
			}
			order, _ := v.BootOrder()
			if !reflect.DeepEqual(order, tc.wantOrder) {
				t.Errorf("BootOrder %v, want %v", order, tc.wantOrder)
			}
			after, _ := v.BootEntries()
			for _, s := range tc.slots {
				n, ok := Find(after, s)
				if !ok || !same(after[n], Want(testESP, s)) {
					t.Errorf("slot %s: entry %v is not Want", s, after[n])
				}
			}
			// A second repair finds nothing to do.
			if again, err := Repair(v, after, testESP, tc.slots); err != nil || len(again) != 0 {
				t.Errorf("second Repair: %v, %v", again, err)
			}
		})
	}
}

func TestPutFirst(t *testing.T) {
	v := efivar.Open(t.TempDir())
	v.SetBootEntry(3, Want(testESP, slot.A))
	v.SetBootEntry(4, Want(testESP, slot.B))
	v.SetBootOrder([]uint16{3, 0, 4})
	entries, _ := v.BootEntries()
	for i, want := range []bool{true, false} {
		wrote, err := PutFirst(v, entries, slot.B)
		if err != nil || wrote != want {
			t.Fatalf("PutFirst #%d = %v, %v; want %v", i+1, wrote, err, want)
		}
	}
	if order, _ := v.BootOrder(); !reflect.DeepEqual(order, []uint16{4, 3, 0}) {
		t.Errorf("BootOrder %v, want [4 3 0]", order)
	}
	if _, err := PutFirst(efivar.Open(t.TempDir()), nil, slot.A); err == nil {
		t.Error("PutFirst without an entry succeeded")
	}
}
