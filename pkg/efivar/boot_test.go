package efivar

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/afero"
)

func TestBootEntries(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			v, raw := b.open(t, nil)
			if err := v.SetBootEntry(0, abbootA); err != nil {
				t.Fatal(err)
			}
			abbootB := &LoadOption{Attributes: LoadOptionActive, Description: "abboot-b", FilePath: DevicePath{espPath[0], FilePath{Path: `\EFI\abboot\b.efi`}}}
			if err := v.SetBootEntry(0xBEEF, abbootB); err != nil {
				t.Fatal(err)
			}
			// Boot0001 exists but its FilePathListLength runs past the end.
			if err := v.Set("Boot0001", GlobalVariable, 7, mustHex(t, "010000005700"+"41000000"+hdNodeHex)); err != nil {
				t.Fatal(err)
			}
			// Files that are not Boot#### of the global vendor.
			for _, name := range []string{
				"Boot000a-" + GlobalVariable.String(),  // lower-case hex
				"Boot00002-" + GlobalVariable.String(), // five digits
				"BootOrder-" + GlobalVariable.String(),
				"Boot0002-" + testVendor.String(),
				".Boot0003-" + GlobalVariable.String() + ".tmp123", // a crashed plain write
			} {
				if err := afero.WriteFile(raw, "/"+name, []byte("\x07\x00\x00\x00\x01\x00"), 0o644); err != nil {
					t.Fatal(err)
				}
			}

			entries, err := v.BootEntries()
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "Boot0001") {
				t.Errorf("BootEntries error = %v, want one naming Boot0001 and wrapping ErrMalformed", err)
			}
			want := map[uint16]*LoadOption{0: abbootA, 0xBEEF: abbootB}
			if !reflect.DeepEqual(entries, want) {
				t.Errorf("BootEntries = %v, want %v", entries, want)
			}

			if err := v.DeleteBootEntry(1); err != nil {
				t.Fatal(err)
			}
			if entries, err := v.BootEntries(); err != nil || len(entries) != 2 {
				t.Errorf("BootEntries after deleting the corrupt one = %v, %v", entries, err)
			}
			if _, err := v.BootEntry(1); !errors.Is(err, ErrNotFound) {
				t.Errorf("BootEntry(1) after delete: %v, want ErrNotFound", err)
			}
			if err := v.DeleteBootEntry(1); !errors.Is(err, ErrNotFound) {
				t.Errorf("DeleteBootEntry of missing: %v, want ErrNotFound", err)
			}
		})
	}
}

func TestFreeBootIndex(t *testing.T) {
	for _, tc := range []struct {
		name    string
		present []string
		want    uint16
	}{
		{"empty", nil, 0},
		{"gap", []string{"Boot0000", "Boot0001", "Boot0003"}, 2},
		{"corrupt entries count as used", []string{"Boot0000", "Boot0001!"}, 2},
		{"lower-case names do not", []string{"Boot0000", "Boot000a", "Boot0001"}, 2},
		{"hex digits", []string{"Boot0000", "Boot0001", "Boot0002", "Boot0003", "Boot0004", "Boot0005", "Boot0006", "Boot0007", "Boot0008", "Boot0009"}, 0xA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, raw := backends[1].open(t, nil)
			for _, p := range tc.present {
				content := "\x07\x00\x00\x00" + string(mustHex(t, efibootmgrBoot0000))
				name, corrupt := strings.CutSuffix(p, "!")
				if corrupt {
					content = "\x07\x00\x00\x00\x01"
				}
				if err := afero.WriteFile(raw, varFile(name, GlobalVariable), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			n, err := v.FreeBootIndex()
			if err != nil || n != tc.want {
				t.Fatalf("FreeBootIndex = %#x, %v; want %#x", n, err, tc.want)
			}
			got, err := v.AddBootEntry(abbootA)
			if err != nil || got != tc.want {
				t.Fatalf("AddBootEntry = %#x, %v; want %#x", got, err, tc.want)
			}
			if o, err := v.BootEntry(got); err != nil || !reflect.DeepEqual(o, abbootA) {
				t.Errorf("BootEntry(%#x) = %+v, %v", got, o, err)
			}
		})
	}
}

func TestBootOrderNextCurrent(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			v, raw := b.open(t, nil)
			if _, err := v.BootOrder(); !errors.Is(err, ErrNotFound) {
				t.Errorf("BootOrder when missing: %v, want ErrNotFound", err)
			}
			if err := v.SetBootOrder([]uint16{3, 0xBEEF, 0}); err != nil {
				t.Fatal(err)
			}
			file, _ := afero.ReadFile(raw, varFile("BootOrder", GlobalVariable))
			if want := "\x07\x00\x00\x00\x03\x00\xef\xbe\x00\x00"; string(file) != want {
				t.Errorf("BootOrder file = %x, want %x", file, want)
			}
			if got, err := v.BootOrder(); err != nil || !reflect.DeepEqual(got, []uint16{3, 0xBEEF, 0}) {
				t.Errorf("BootOrder = %v, %v", got, err)
			}
			if err := v.SetBootOrder(nil); err != nil {
				t.Fatal(err)
			}
			if _, err := v.BootOrder(); !errors.Is(err, ErrNotFound) {
				t.Errorf("BootOrder after SetBootOrder(nil): %v, want ErrNotFound", err)
			}
			if err := v.SetBootOrder(nil); err != nil {
				t.Errorf("SetBootOrder(nil) when missing: %v", err)
			}

			if n, ok, err := v.BootNext(); err != nil || ok {
				t.Errorf("BootNext when missing = %d, %v, %v", n, ok, err)
			}
			if err := v.SetBootNext(0xBEEF); err != nil {
				t.Fatal(err)
			}
			if n, ok, err := v.BootNext(); err != nil || !ok || n != 0xBEEF {
				t.Errorf("BootNext = %#x, %v, %v", n, ok, err)
			}
			for range 2 {
				if err := v.DeleteBootNext(); err != nil {
					t.Errorf("DeleteBootNext: %v", err)
				}
			}
			if _, ok, _ := v.BootNext(); ok {
				t.Errorf("BootNext still set after DeleteBootNext")
			}

			if _, err := v.BootCurrent(); !errors.Is(err, ErrNotFound) {
				t.Errorf("BootCurrent when missing: %v, want ErrNotFound", err)
			}
			if err := v.Set("BootCurrent", GlobalVariable, AttrBootserviceAccess|AttrRuntimeAccess, []byte{0x01, 0x02}); err != nil {
				t.Fatal(err)
			}
			if n, err := v.BootCurrent(); err != nil || n != 0x0201 {
				t.Errorf("BootCurrent = %#x, %v", n, err)
			}
		})
	}
}

func TestBootVariablesMalformed(t *testing.T) {
	v, _ := backends[1].open(t, nil)
	for name, data := range map[string][]byte{"BootOrder": {1, 0, 2}, "BootNext": {1, 0, 2, 0}, "BootCurrent": {1}} {
		if err := v.Set(name, GlobalVariable, 7, data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.BootOrder(); !errors.Is(err, ErrMalformed) {
		t.Errorf("BootOrder of 3 bytes: %v, want ErrMalformed", err)
	}
	if _, ok, err := v.BootNext(); !errors.Is(err, ErrMalformed) || ok {
		t.Errorf("BootNext of 4 bytes: %v, %v; want ErrMalformed", ok, err)
	}
	if _, err := v.BootCurrent(); !errors.Is(err, ErrMalformed) {
		t.Errorf("BootCurrent of 1 byte: %v, want ErrMalformed", err)
	}
}

// TestBootName: the name has four upper-case hex digits and reads back.
func TestBootName(t *testing.T) {
	for n, want := range map[uint16]string{0: "Boot0000", 0x1a: "Boot001A", 0xffff: "BootFFFF"} {
		if got := BootName(n); got != want {
			t.Errorf("BootName(%#x) = %s, want %s", n, got, want)
		}
		if back, ok := parseBootName(want + "-" + GlobalVariable.String()); !ok || back != n {
			t.Errorf("parseBootName(%s) = %#x, %v", want, back, ok)
		}
	}
}
