package slotstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/abboot/abboot/internal/powercut"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/spf13/afero"
)

// states are the interesting states: both bad, a committed slot with a
// fallback, a trial with the counted marker on either slot, no marker,
// and the largest values every field can hold.
var states = []slotstate.State{
	{},
	{A: slotstate.Attrs{Priority: 2, Successful: true}, B: slotstate.Attrs{Priority: 1, Successful: true}},
	{A: slotstate.Attrs{Priority: 1, Successful: true}, B: slotstate.Attrs{Priority: 2, Tries: 3}, Counted: slot.B},
	{A: slotstate.Attrs{Priority: 3, Tries: 2}, B: slotstate.Attrs{Priority: 2, Successful: true}, Counted: slot.A},
	{A: slotstate.Attrs{Priority: 0, Tries: 15}, B: slotstate.Attrs{Priority: 15}},
	{A: slotstate.Attrs{Priority: 15, Tries: 15, Successful: true}, B: slotstate.Attrs{Priority: 15, Tries: 15, Successful: true}, Counted: slot.B},
	// Crash counts (issue 13).
	{A: slotstate.Attrs{Priority: 1, Successful: true, Crashes: 3}, B: slotstate.Attrs{Priority: 2, Successful: true, Crashes: 1}},
	{A: slotstate.Attrs{Priority: 4, Successful: true, Crashes: 2}, B: slotstate.Attrs{Priority: 5, Tries: 1}, Counted: slot.B},
}

// diskSize is the size of the test disks: the two GPT copies and four
// small partitions, placed by hand (Layout would align them to 1 MiB).
const diskSize = 128 << 10

// testParts is a disk of 512-byte sectors with an ESP, both roots and a
// data partition at entry 5; bits gives the roots' attribute bits.
func testParts(bitsA, bitsB uint64) []gpt.Partition {
	mk := func(n int, typ guid.GUID, name string, first uint64, attrs uint64) gpt.Partition {
		return gpt.Partition{Number: n, Type: typ, UUID: guid.MustParse(fmt.Sprintf("a0000000-0000-4000-8000-%012d", n)),
			FirstLBA: first, LastLBA: first + 15, Name: name, Attributes: attrs}
	}
	return []gpt.Partition{
		mk(1, gpt.TypeESP, "ESP", 40, 0),
		mk(2, gpt.TypeRootX86_64, slot.A.RootLabel(), 56, bitsA),
		mk(3, gpt.TypeRootX86_64, slot.B.RootLabel(), 72, bitsB),
		mk(5, gpt.TypeLinuxData, "data", 88, 1<<60|1),
	}
}

// writeDisk writes a disk image with parts to a new file and returns its
// path.
func writeDisk(t testing.TB, parts []gpt.Partition) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(diskSize); err != nil {
		t.Fatal(err)
	}
	if err := gpt.Create(f, diskSize, 512, guid.MustParse("d15c0000-0000-4000-8000-00000000d15c"), parts); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustGPT(t testing.TB, path string) *GPT {
	t.Helper()
	g, err := NewGPT(path)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// stores makes a fresh store of each kind.
var stores = []struct {
	name string
	new  func(t *testing.T) Store
}{
	{"gpt", func(t *testing.T) Store { return mustGPT(t, writeDisk(t, testParts(0, 0))) }},
	{"var", func(t *testing.T) Store { return NewVar(efivar.Open(t.TempDir())) }},
}

// TestRoundTrip saves every state over every other and loads it back.
func TestRoundTrip(t *testing.T) {
	for _, sc := range stores {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.new(t)
			for _, old := range states {
				for _, new := range states {
					if err := s.Save(old); err != nil {
						t.Fatal(err)
					}
					if err := s.Save(new); err != nil {
						t.Fatal(err)
					}
					if got, err := s.Load(); err != nil || got != new {
						t.Errorf("after Save(%+v) then Save(%+v): Load = %+v, %v", old, new, got, err)
					}
				}
			}
		})
	}
}

// TestSaveInvalid: a state out of range is refused and nothing written.
func TestSaveInvalid(t *testing.T) {
	for _, sc := range stores {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.new(t)
			if err := s.Save(states[2]); err != nil {
				t.Fatal(err)
			}
			for _, bad := range []slotstate.State{
				{A: slotstate.Attrs{Priority: 16}},
				{B: slotstate.Attrs{Tries: -1}},
				{Counted: "c"},
			} {
				if err := s.Save(bad); err == nil {
					t.Errorf("Save(%+v) succeeded", bad)
				}
			}
			if got, err := s.Load(); err != nil || got != states[2] {
				t.Errorf("after refused saves: Load = %+v, %v; want %+v", got, err, states[2])
			}
		})
	}
}

// TestGPTBits checks the exact bits Save writes: the cgpt fields, bit 61
// on the counted slot only, and every other bit kept, including the UEFI
// required bit 0 and the DPS bits 59, 60 and 63.
// TestAttrBits checks the cgpt encoding against the bit positions of
// vboot_reference's cgptlib (priority 48-51, tries 52-55, successful 56).
func TestAttrBits(t *testing.T) {
	for _, tc := range []struct {
		in   uint64
		a    slotstate.Attrs
		want uint64
		back slotstate.Attrs // AttrsOf(want)
	}{
		{0, slotstate.Attrs{}, 0, slotstate.Attrs{}},
		{0, slotstate.Attrs{Priority: 1}, 1 << 48, slotstate.Attrs{Priority: 1}},
		{0, slotstate.Attrs{Tries: 1}, 1 << 52, slotstate.Attrs{Tries: 1}},
		{0, slotstate.Attrs{Successful: true}, 1 << 56, slotstate.Attrs{Successful: true}},
		{0, slotstate.Attrs{Priority: 15, Tries: 15, Successful: true}, 0x01ff << 48, slotstate.Attrs{Priority: 15, Tries: 15, Successful: true}},
		// Other bits (required bit 0, bit 60, the counted marker 61)
		// survive; old slot bits go.
		{1<<61 | 1<<60 | 1 | 0x01ff<<48, slotstate.Attrs{Priority: 2, Tries: 3}, 1<<61 | 1<<60 | 1 | 0x32<<48, slotstate.Attrs{Priority: 2, Tries: 3}},
		// Out-of-range values are clamped, not spilled.
		{0, slotstate.Attrs{Priority: 16, Tries: -1}, 15 << 48, slotstate.Attrs{Priority: 15}},
	} {
		got := WithAttrs(tc.in, tc.a)
		if got != tc.want {
			t.Errorf("WithAttrs(%#x, %+v) = %#x, want %#x", tc.in, tc.a, got, tc.want)
		}
		if back := AttrsOf(got); back != tc.back {
			t.Errorf("AttrsOf(%#x) = %+v, want %+v", got, back, tc.back)
		}
	}
}

func TestGPTBits(t *testing.T) {
	others := []uint64{0, 1, 1 << 60, 1<<63 | 1<<59 | 1<<57 | 1<<47 | 1<<2}
	for _, otherA := range others {
		for _, st := range states {
			// B starts with the counted marker set, which Save must
			// clear unless B is the counted slot.
			otherB := otherA ^ 1<<60
			path := writeDisk(t, testParts(otherA|0xf<<48, otherB|1<<61|1<<56))
			if err := mustGPT(t, path).Save(st); err != nil {
				t.Fatal(err)
			}
			tab, err := gpt.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want := testParts(otherA, otherB)
			for i, s := range slot.All {
				a := st.Get(s)
				want[i+1].Attributes = WithAttrs(want[i+1].Attributes, a)
				if st.Counted == s {
					want[i+1].Attributes |= 1 << 61
				}
			}
			for i, p := range tab.Partitions {
				if p != want[i] {
					t.Errorf("Save(%+v) over other bits %#x:\n got %v\nwant %v", st, otherA, p, want[i])
				}
			}
			if tab.NeedsRepair() {
				t.Errorf("after Save: %v, %v", tab.PrimaryErr, tab.BackupErr)
			}
		}
	}
}

// TestGPTLoad reads hand-made attribute bits.
func TestGPTLoad(t *testing.T) {
	for _, tc := range []struct {
		a, b    uint64
		want    slotstate.State
		corrupt bool
	}{
		{0, 0, slotstate.State{}, false},
		{WithAttrs(1<<60|1, slotstate.Attrs{Priority: 15, Tries: 3}), WithAttrs(0, slotstate.Attrs{Priority: 1, Successful: true}) | 1<<61,
			slotstate.State{A: slotstate.Attrs{Priority: 15, Tries: 3}, B: slotstate.Attrs{Priority: 1, Successful: true}, Counted: slot.B}, false},
		{WithAttrs(1<<62, slotstate.Attrs{Priority: 2, Tries: 15, Successful: true}) | 1<<61, 1 << 57,
			slotstate.State{A: slotstate.Attrs{Priority: 2, Tries: 15, Successful: true}, Counted: slot.A}, false},
		{1 << 61, 1 << 61, slotstate.State{}, true},
	} {
		got, err := mustGPT(t, writeDisk(t, testParts(tc.a, tc.b))).Load()
		switch {
		case tc.corrupt && !errors.Is(err, ErrCorrupt):
			t.Errorf("bits %#x, %#x: Load = %+v, %v; want ErrCorrupt", tc.a, tc.b, got, err)
		case !tc.corrupt && (err != nil || got != tc.want):
			t.Errorf("bits %#x, %#x: Load = %+v, %v; want %+v", tc.a, tc.b, got, err, tc.want)
		}
	}
}

// TestGPTRepair: a disk whose primary table is broken loads from the
// backup, and Save repairs it before editing.
func TestGPTRepair(t *testing.T) {
	path := writeDisk(t, testParts(WithAttrs(0, slotstate.Attrs{Priority: 3, Tries: 1}), 0))
	breakPrimary(t, path)
	g := mustGPT(t, path)
	want := slotstate.State{A: slotstate.Attrs{Priority: 3, Tries: 1}}
	if got, err := g.Load(); err != nil || got != want {
		t.Fatalf("Load of a disk with a broken primary = %+v, %v; want %+v", got, err, want)
	}
	if err := g.Save(states[1]); err != nil {
		t.Fatal(err)
	}
	tab, err := gpt.ReadFile(path)
	if err != nil || tab.NeedsRepair() {
		t.Fatalf("after Save: %v; %v, %v", err, tab.PrimaryErr, tab.BackupErr)
	}
	if got, err := g.Load(); err != nil || got != states[1] {
		t.Errorf("Load after Save = %+v, %v; want %+v", got, err, states[1])
	}
}

// breakPrimary zeroes the primary GPT header (LBA 1).
func breakPrimary(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, 512), 512); err != nil {
		t.Fatal(err)
	}
}

// TestNoWriteWhenUnchanged: saving the state already stored writes
// nothing (rule 7).
func TestNoWriteWhenUnchanged(t *testing.T) {
	t.Run("gpt", func(t *testing.T) {
		path := writeDisk(t, testParts(0, 0))
		if err := mustGPT(t, path).Save(states[3]); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cf := &powercut.File{File: f, P: &powercut.Power{}}
		g, err := NewGPTFile(cf, path, diskSize)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Save(states[3]); err != nil || cf.P.Cut() {
			t.Errorf("Save of the stored state: %v, wrote: %v", err, cf.P.Cut())
		}
	})
	t.Run("var", func(t *testing.T) {
		dir := t.TempDir()
		if err := NewVar(efivar.Open(dir)).Save(states[3]); err != nil {
			t.Fatal(err)
		}
		pw := &powercut.Power{}
		if err := NewVar(efivar.OpenFS(pw.FS(afero.NewBasePathFs(afero.NewOsFs(), dir)))).Save(states[3]); err != nil || pw.Cut() {
			t.Errorf("Save of the stored state: %v, wrote: %v", err, pw.Cut())
		}
	})
}

// snapshot records every file under dir: content, mode and mtime.
func snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		var b []byte
		if d.Type().IsRegular() {
			if b, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		m[p] = fmt.Sprintf("%v %v %x", fi.Mode(), fi.ModTime().UnixNano(), b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestLoadNeverWrites loads from a healthy disk, a disk that needs
// repair, and a variable directory with a good, a missing and a corrupt
// variable, and checks that nothing changed, not even an mtime.
func TestLoadNeverWrites(t *testing.T) {
	healthy := writeDisk(t, testParts(WithAttrs(0, slotstate.Attrs{Priority: 1, Successful: true}), 0))
	broken := writeDisk(t, testParts(WithAttrs(0, slotstate.Attrs{Priority: 1, Successful: true}), 0))
	breakPrimary(t, broken)
	good, missing, corrupt := t.TempDir(), t.TempDir(), t.TempDir()
	if err := NewVar(efivar.Open(good)).Save(states[2]); err != nil {
		t.Fatal(err)
	}
	if err := efivar.Open(corrupt).Set(VarName, Vendor, varAttrs, []byte("ABS\x01garbage....")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir     string
		store   func() Store
		wantErr error
	}{
		{filepath.Dir(healthy), func() Store { return mustGPT(t, healthy) }, nil},
		{filepath.Dir(broken), func() Store { return mustGPT(t, broken) }, nil},
		{good, func() Store { return NewVar(efivar.Open(good)) }, nil},
		{missing, func() Store { return NewVar(efivar.Open(missing)) }, ErrNoState},
		{corrupt, func() Store { return NewVar(efivar.Open(corrupt)) }, ErrCorrupt},
	} {
		before := snapshot(t, tc.dir)
		s := tc.store()
		_, err := s.Load()
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
			t.Errorf("%s: Load: %v, want %v", s, err, tc.wantErr)
		}
		if after := snapshot(t, tc.dir); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("%s: Load changed %s:\nbefore %v\nafter  %v", s, tc.dir, before, after)
		}
	}
}

func TestOpen(t *testing.T) {
	roots := writeDisk(t, testParts(0, 0))
	espOnly := writeDisk(t, testParts(0, 0)[:1])
	halfParts := testParts(0, 0)
	halfParts[2].Name = "other"
	half := writeDisk(t, halfParts)
	twiceParts := testParts(0, 0)
	twiceParts[3].Name = slot.A.RootLabel()
	twice := writeDisk(t, twiceParts)
	v := efivar.Open(t.TempDir())
	for _, tc := range []struct {
		disk string
		v    *efivar.Vars
		want string // String of the store; "" for an error
	}{
		{roots, v, "gpt:" + roots},
		{roots, nil, "gpt:" + roots},
		{espOnly, v, "efivar:AbbootSlots"},
		{"", v, "efivar:AbbootSlots"},
		{espOnly, nil, ""},
		{"", nil, ""},
		{half, v, ""},
		{twice, v, ""},
		{filepath.Join(t.TempDir(), "missing.img"), v, ""},
	} {
		s, err := Open(tc.disk, tc.v)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("Open(%q, %v) = %v, want an error", tc.disk, tc.v != nil, s)
		case tc.want != "" && (err != nil || s.String() != tc.want):
			t.Errorf("Open(%q, %v) = %v, %v; want %s", tc.disk, tc.v != nil, s, err, tc.want)
		}
		if err != nil && s != nil {
			t.Errorf("Open(%q) returned both %v and %v", tc.disk, s, err)
		}
	}
}

// TestVarFormat pins the variable's bytes, so that a change of the format
// cannot go unnoticed, and checks the attributes.
func TestVarFormat(t *testing.T) {
	dir := t.TempDir()
	st := slotstate.State{A: slotstate.Attrs{Priority: 15, Tries: 0, Successful: true}, B: slotstate.Attrs{Priority: 3, Tries: 2}, Counted: slot.B}
	if err := NewVar(efivar.Open(dir)).Save(st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "AbbootSlots-c2a9b6e4-5d1f-4b7a-9e3c-abb0070a0b01"))
	if err != nil {
		t.Fatal(err)
	}
	// Attributes NV|BS|RT, then "ABS", version 1, A 15/0/1, B 3/2/0,
	// 'b', CRC32.
	want := []byte{7, 0, 0, 0, 'A', 'B', 'S', 1, 15, 0, 1, 3, 2, 0, 'b'}
	if len(b) != len(want)+4 || !bytes.Equal(b[:len(want)], want) ||
		binary.LittleEndian.Uint32(b[len(want):]) != crc32.ChecksumIEEE(want[4:]) {
		t.Errorf("variable file % x, want % x and the CRC32 of all but the attributes", b, want)
	}
}

// TestVarCrashes: the crash counts take flag bits 1-2, and a state without
// crashes encodes as before they existed.
func TestVarCrashes(t *testing.T) {
	st := slotstate.State{A: slotstate.Attrs{Priority: 1, Successful: true, Crashes: 2}, B: slotstate.Attrs{Priority: 2, Successful: true, Crashes: slotstate.MaxCrashes}}
	b, err := encodeVar(st)
	if err != nil {
		t.Fatal(err)
	}
	if b[6] != 1|2<<1 || b[9] != 1|3<<1 {
		t.Errorf("flags %#x %#x, want %#x %#x", b[6], b[9], 1|2<<1, 1|3<<1)
	}
	if got, err := decodeVar(b); err != nil || got != st {
		t.Errorf("decodeVar(encodeVar(%+v)) = %+v, %v", st, got, err)
	}
	st.A.Crashes, st.B.Crashes = 0, 0
	if b, _ := encodeVar(st); b[6] != 1 || b[9] != 1 {
		t.Errorf("no crashes: flags %#x %#x, want 1 1", b[6], b[9])
	}
}

// TestDecodeVarErrors: every broken encoding is ErrCorrupt.
func TestDecodeVarErrors(t *testing.T) {
	good, err := encodeVar(states[3])
	if err != nil {
		t.Fatal(err)
	}
	// edit changes byte i of a good encoding and, with fix, recomputes
	// the CRC32 so that the check behind it is reached.
	edit := func(i int, v byte, fix bool) []byte {
		b := append([]byte(nil), good...)
		b[i] = v
		if fix {
			binary.LittleEndian.PutUint32(b[varLen-4:], crc32.ChecksumIEEE(b[:varLen-4]))
		}
		return b
	}
	for name, b := range map[string][]byte{
		"empty":        nil,
		"short":        good[:10],
		"long":         append(append([]byte(nil), good...), 0),
		"magic":        edit(0, 'X', true),
		"version":      edit(3, 2, true),
		"crc":          edit(14, good[14]^1, false),
		"flipped bit":  edit(5, good[5]^4, false),
		"priority 16":  edit(4, 16, true),
		"tries 200":    edit(8, 200, true),
		"flags":        edit(6, 8, true),
		"counted c":    edit(10, 'c', true),
		"counted A":    edit(10, 'A', true),
		"other magic2": []byte("ABSX"),
	} {
		if st, err := decodeVar(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: decodeVar(% x) = %+v, %v; want ErrCorrupt", name, b, st, err)
		}
	}
}

func TestPartitions(t *testing.T) {
	part := func(n int, label string) gpt.Partition { return gpt.Partition{Number: n, Name: label} }
	rootB, verityB := part(3, slot.B.RootLabel()), part(5, slot.B.VerityLabel())
	for _, tc := range []struct {
		name    string
		parts   []gpt.Partition
		ok      bool
		wantErr bool
	}{
		{"both", []gpt.Partition{part(2, slot.A.RootLabel()), rootB, part(4, slot.A.VerityLabel()), verityB}, true, false},
		{"neither", []gpt.Partition{part(2, slot.A.RootLabel())}, false, false},
		{"root only", []gpt.Partition{rootB}, false, true},
		{"verity only", []gpt.Partition{verityB}, false, true},
		{"root twice", []gpt.Partition{rootB, verityB, part(6, slot.B.RootLabel())}, false, true},
	} {
		root, verity, ok, err := Partitions(&gpt.Table{Partitions: tc.parts}, slot.B)
		if ok != tc.ok || (err != nil) != tc.wantErr || ok && (root != rootB || verity != verityB) {
			t.Errorf("%s: Partitions = %v, %v, %v, %v", tc.name, root, verity, ok, err)
		}
	}
}
