package gpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"reflect"
	"slices"
	"testing"

	"github.com/abboot/abboot/internal/testutil"
	"github.com/abboot/abboot/pkg/guid"
)

// testParts is a typical abboot disk: ESP, two roots, a data partition
// at entry 5 (a gap in the numbering).
func testParts() []Partition {
	return []Partition{
		{Type: TypeESP, UUID: guid.MustParse("a0000000-0000-4000-8000-000000000001"), Name: "ESP"},
		{Type: TypeRootX86_64, UUID: guid.MustParse("a0000000-0000-4000-8000-000000000002"), Name: "abboot-root-a",
			Attributes: 0x0102 << 48},
		{Type: TypeRootX86_64, UUID: guid.MustParse("a0000000-0000-4000-8000-000000000003"), Name: "abboot-root-b",
			Attributes: 0x0031<<48 | 1},
		{Number: 5, Type: TypeLinuxData, UUID: guid.MustParse("a0000000-0000-4000-8000-000000000005"), Name: "données"},
	}
}

var testDiskGUID = guid.MustParse("d15c0000-0000-4000-8000-00000000d15c")

// newImage returns an in-memory disk of 8 MiB with testParts laid out.
func newImage(t testing.TB, sectorSize int) (*testutil.MemFile, []Partition) {
	t.Helper()
	const size = 8 << 20
	parts := testParts()
	if err := Layout(size, sectorSize, parts, []int64{2 << 20, 1 << 20, 1 << 20, 100 << 10}); err != nil {
		t.Fatal(err)
	}
	m := testutil.NewDisk(size)
	if err := Create(m, size, sectorSize, testDiskGUID, parts); err != nil {
		t.Fatal(err)
	}
	parts[3].Number = 5
	for i := range 3 {
		parts[i].Number = i + 1
	}
	return m, parts
}

func openMem(t testing.TB, m *testutil.MemFile, sectorSize int, writable bool) *Disk {
	t.Helper()
	d, err := OpenFile(m, "mem", int64(len(m.B)), sectorSize, writable)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readMem(t testing.TB, m *testutil.MemFile) *Table {
	t.Helper()
	tab, err := openMem(t, m, 0, false).Read()
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestCreateRead(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		t.Run(fmt.Sprint(ss), func(t *testing.T) {
			m, parts := newImage(t, ss)
			tab := readMem(t, m)
			n := uint64(16384 / ss)
			last := uint64(len(m.B)/ss) - 1
			if tab.SectorSize != ss || tab.DiskGUID != testDiskGUID || tab.FirstUsableLBA != 2+n ||
				tab.LastUsableLBA != last-1-n || tab.EntryCount != 128 || tab.EntrySize != 128 {
				t.Errorf("table = %+v", tab)
			}
			if tab.NeedsRepair() {
				t.Errorf("fresh table needs repair: %v, %v", tab.PrimaryErr, tab.BackupErr)
			}
			if !reflect.DeepEqual(tab.Partitions, parts) {
				t.Errorf("partitions:\n got %v\nwant %v", tab.Partitions, parts)
			}
			if p := tab.Partitions[0]; p.Start(ss) != 1<<20 || p.Size(ss) != 2<<20 {
				t.Errorf("ESP at %d size %d, want 1 MiB, 2 MiB", p.Start(ss), p.Size(ss))
			}
			if p, ok := tab.ByName("abboot-root-b"); !ok || p.Number != 3 {
				t.Errorf("ByName(abboot-root-b) = %v, %v", p, ok)
			}
			if p, ok := tab.ByUUID(parts[3].UUID); !ok || p.Name != "données" {
				t.Errorf("ByUUID = %v, %v", p, ok)
			}
			if roots := tab.ByType(TypeRootX86_64); len(roots) != 2 || roots[0].Number != 2 || roots[1].Number != 3 {
				t.Errorf("ByType(root) = %v", roots)
			}
			if _, ok := tab.ByName("nope"); ok {
				t.Errorf("ByName(nope) found something")
			}
			// Protective MBR (UEFI 2.10 §5.2.3).
			mbr := m.B[:512]
			if mbr[450] != 0xee || mbr[510] != 0x55 || mbr[511] != 0xaa ||
				binary.LittleEndian.Uint32(mbr[454:]) != 1 || binary.LittleEndian.Uint32(mbr[458:]) != uint32(last) {
				t.Errorf("protective MBR record % x", mbr[446:462])
			}
		})
	}
}

func TestDetectSectorSize(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		m, _ := newImage(t, ss)
		// With the primary wiped, the backup header still tells.
		clear(m.B[ss : 2*ss])
		if got := openMem(t, m, 0, false).SectorSize(); got != ss {
			t.Errorf("detected sector size %d, want %d", got, ss)
		}
	}
}

// rewriteEntries changes the entries of the copy whose header is at lba
// and fixes both CRCs, producing a copy that is valid by checksum.
func rewriteEntries(m *testutil.MemFile, ss int, lba uint64, edit func(entries []byte)) {
	h, err := parseHeader(m.B[int(lba)*ss:][:ss])
	if err != nil {
		panic(err)
	}
	off := int(h.entriesLBA) * ss
	entries := m.B[off : off+int(h.entryCount*h.entrySize)]
	edit(entries)
	h.entriesCRC = crc32.ChecksumIEEE(entries)
	copy(m.B[int(lba)*ss:], h.marshal(ss))
}

func TestCorruption(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		lastLBA := func(m *testutil.MemFile) uint64 { return uint64(len(m.B)/ss) - 1 }
		backupEntries := func(m *testutil.MemFile) int { return int(lastLBA(m)-uint64(16384/ss)) * ss }
		for _, tc := range []struct {
			name                string
			corrupt             func(m *testutil.MemFile)
			primaryOK, backupOK bool
		}{
			{"primary header CRC", func(m *testutil.MemFile) { m.B[ss+60] ^= 1 }, false, true},
			{"primary signature", func(m *testutil.MemFile) { clear(m.B[ss : ss+8]) }, false, true},
			{"primary entries CRC", func(m *testutil.MemFile) { m.B[2*ss+128+60] ^= 0x80 }, false, true},
			{"primary header zeroed", func(m *testutil.MemFile) { clear(m.B[ss : 2*ss]) }, false, true},
			{"backup header CRC", func(m *testutil.MemFile) { m.B[int(lastLBA(m))*ss+40] ^= 1 }, true, false},
			{"backup entries CRC", func(m *testutil.MemFile) { m.B[backupEntries(m)+5] ^= 1 }, true, false},
			{"backup one edit ahead", func(m *testutil.MemFile) {
				rewriteEntries(m, ss, lastLBA(m), func(e []byte) { e[48+128] ^= 1 })
			}, true, false},
			{"primary partition outside usable range", func(m *testutil.MemFile) {
				rewriteEntries(m, ss, 1, func(e []byte) { binary.LittleEndian.PutUint64(e[40:], 1<<40) })
			}, false, true},
			{"primary partitions overlap", func(m *testutil.MemFile) {
				rewriteEntries(m, ss, 1, func(e []byte) { copy(e[128+32:128+40], e[32:40]) })
			}, false, true},
			{"primary entry array over usable range", func(m *testutil.MemFile) {
				h, _ := parseHeader(m.B[ss : 2*ss])
				h.entriesLBA = h.firstUsable
				copy(m.B[ss:], h.marshal(ss))
			}, false, true},
			{"primary misplaced", func(m *testutil.MemFile) {
				h, _ := parseHeader(m.B[ss : 2*ss])
				h.myLBA = 7
				copy(m.B[ss:], h.marshal(ss))
			}, false, true},
			{"both headers", func(m *testutil.MemFile) { m.B[ss+60] ^= 1; m.B[int(lastLBA(m))*ss+60] ^= 1 }, false, false},
		} {
			t.Run(fmt.Sprintf("%d/%s", ss, tc.name), func(t *testing.T) {
				orig, parts := newImage(t, ss)
				m := orig.Clone()
				tc.corrupt(m)
				corrupted := m.Clone()
				d := openMem(t, m, ss, true)
				tab, err := d.Read()
				if !tc.primaryOK && !tc.backupOK {
					if err == nil {
						t.Fatalf("Read of a disk with both copies broken succeeded")
					}
					if err := d.Repair(); err == nil {
						t.Errorf("Repair of a disk with both copies broken succeeded")
					}
					if !bytes.Equal(m.B, corrupted.B) {
						t.Errorf("failed Repair wrote to the disk")
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(m.B, corrupted.B) {
					t.Errorf("Read wrote to the disk")
				}
				if (tab.PrimaryErr == nil) != tc.primaryOK || (tab.BackupErr == nil) != tc.backupOK {
					t.Errorf("PrimaryErr = %v, BackupErr = %v; want primary ok %v, backup ok %v", tab.PrimaryErr, tab.BackupErr, tc.primaryOK, tc.backupOK)
				}
				if !reflect.DeepEqual(tab.Partitions, parts) {
					t.Errorf("partitions:\n got %v\nwant %v", tab.Partitions, parts)
				}
				if err := d.SetAttributes(2, 0); !errors.Is(err, ErrNeedsRepair) {
					t.Errorf("SetAttributes on a broken disk: %v, want ErrNeedsRepair", err)
				}
				if !bytes.Equal(m.B, corrupted.B) {
					t.Errorf("refused SetAttributes wrote to the disk")
				}
				if err := d.Repair(); err != nil {
					t.Fatal(err)
				}
				// Our tables keep the primary entries at LBA 2, so a
				// repair restores the very bytes Create wrote.
				if !bytes.Equal(m.B, orig.B) {
					t.Errorf("repaired disk differs from the original")
				}
			})
		}
	}
}

func TestRepairGrownDisk(t *testing.T) {
	m, parts := newImage(t, 512)
	m.B = append(m.B, make([]byte, 1<<20)...)
	d := openMem(t, m, 0, true)
	tab, err := d.Read()
	if err != nil {
		t.Fatal(err)
	}
	if tab.PrimaryErr != nil || tab.BackupErr == nil {
		t.Fatalf("grown disk: PrimaryErr = %v, BackupErr = %v; want only the backup reported", tab.PrimaryErr, tab.BackupErr)
	}
	if err := d.Repair(); err != nil {
		t.Fatal(err)
	}
	tab = readMem(t, m)
	if tab.NeedsRepair() || !reflect.DeepEqual(tab.Partitions, parts) {
		t.Errorf("after repair: %v, %v, %v", tab.PrimaryErr, tab.BackupErr, tab.Partitions)
	}
	h, _ := parseHeader(m.B[512:1024])
	if want := uint64(len(m.B)/512 - 1); h.altLBA != want {
		t.Errorf("primary AlternateLBA = %d, want %d", h.altLBA, want)
	}
}

// countingFile counts writes and syncs.
type countingFile struct {
	File
	writes, syncs int
}

func (c *countingFile) WriteAt(p []byte, off int64) (int, error) {
	c.writes++
	return c.File.WriteAt(p, off)
}

func (c *countingFile) Sync() error { c.syncs++; return c.File.Sync() }

func TestSetAttributes(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		t.Run(fmt.Sprint(ss), func(t *testing.T) {
			m, parts := newImage(t, ss)
			c := &countingFile{File: m}
			d, err := OpenFile(c, "mem", int64(len(m.B)), 0, true)
			if err != nil {
				t.Fatal(err)
			}
			attrs := parts[2].Attributes ^ 0xf<<48 | 1<<63
			if err := d.SetAttributes(3, attrs); err != nil {
				t.Fatal(err)
			}
			if c.writes != 4 || c.syncs != 2 {
				t.Errorf("SetAttributes made %d writes and %d syncs, want 4 and 2", c.writes, c.syncs)
			}
			tab := readMem(t, m)
			if tab.NeedsRepair() {
				t.Errorf("after SetAttributes: %v, %v", tab.PrimaryErr, tab.BackupErr)
			}
			parts[2].Attributes = attrs
			if !reflect.DeepEqual(tab.Partitions, parts) {
				t.Errorf("partitions:\n got %v\nwant %v", tab.Partitions, parts)
			}
			// Setting what is already there writes nothing (docs/design.md,
			// rule 7: a steady-state boot performs zero writes).
			c.writes, c.syncs = 0, 0
			if err := d.SetAttributes(3, attrs); err != nil || c.writes != 0 || c.syncs != 0 {
				t.Errorf("no-op SetAttributes: %v, %d writes, %d syncs", err, c.writes, c.syncs)
			}
			// Two partitions in one edit: still one write of the entries
			// and one of the header per copy.
			c.writes, c.syncs = 0, 0
			both := map[int]uint64{2: parts[1].Attributes &^ (0x1ff << 48), 5: 1 << 60}
			if err := d.SetAttributesOf(both); err != nil || c.writes != 4 || c.syncs != 2 {
				t.Errorf("SetAttributesOf(%v): %v, %d writes, %d syncs; want 4 and 2", both, err, c.writes, c.syncs)
			}
			parts[1].Attributes, parts[3].Attributes = both[2], both[5]
			if tab := readMem(t, m); tab.NeedsRepair() || !reflect.DeepEqual(tab.Partitions, parts) {
				t.Errorf("after SetAttributesOf: %v, %v, partitions:\n got %v\nwant %v", tab.PrimaryErr, tab.BackupErr, tab.Partitions, parts)
			}
			c.writes, c.syncs = 0, 0
			if err := d.SetAttributesOf(nil); err != nil || c.writes != 0 {
				t.Errorf("empty SetAttributesOf: %v, %d writes", err, c.writes)
			}
			before := m.Clone()
			for _, n := range []int{0, 4, 6, 129, -1} {
				if err := d.SetAttributes(n, 1); err == nil {
					t.Errorf("SetAttributes(%d) succeeded on an unused entry", n)
				}
			}
			if err := d.SetAttributesOf(map[int]uint64{2: 7, 4: 7}); err == nil {
				t.Errorf("SetAttributesOf with an unused entry succeeded")
			}
			if err := openMem(t, m, 0, false).SetAttributes(2, 7); err == nil {
				t.Errorf("SetAttributes on a read-only disk succeeded")
			}
			if err := openMem(t, m, 0, false).Repair(); err == nil {
				t.Errorf("Repair on a read-only disk succeeded")
			}
			if !bytes.Equal(before.B, m.B) {
				t.Errorf("refused calls wrote to the disk")
			}
		})
	}
}

func TestEdit(t *testing.T) {
	u := func(s string) *guid.GUID { g := guid.MustParse(s); return &g }
	a := func(v uint64) *uint64 { return &v }
	newA, newB := u("5f1c0000-0000-4000-8000-00000000000a"), u("5f1c0000-0000-4000-8000-00000000000b")
	parts := testParts()
	for _, tc := range []struct {
		name    string
		edit    map[int]PartitionEdit
		writes  int  // 0: nothing written
		wantErr bool // refused, nothing written
	}{
		{"one UUID", map[int]PartitionEdit{3: {UUID: newB}}, 4, false},
		{"UUIDs and attributes", map[int]PartitionEdit{2: {UUID: newA, Attributes: a(1 << 60)}, 3: {UUID: newB}}, 4, false},
		{"UUID of a partition far away", map[int]PartitionEdit{5: {UUID: newA}, 2: {Attributes: a(7)}}, 4, false},
		{"swap two UUIDs", map[int]PartitionEdit{2: {UUID: &parts[2].UUID}, 3: {UUID: &parts[1].UUID}}, 4, false},
		{"what is already there", map[int]PartitionEdit{2: {UUID: &parts[1].UUID, Attributes: &parts[1].Attributes}}, 0, false},
		{"nothing", map[int]PartitionEdit{2: {}}, 0, false},
		{"zero UUID", map[int]PartitionEdit{3: {UUID: &guid.Zero}}, 0, true},
		{"UUID another partition has", map[int]PartitionEdit{3: {UUID: &parts[0].UUID}}, 0, true},
		{"same new UUID twice", map[int]PartitionEdit{2: {UUID: newA}, 3: {UUID: newA}}, 0, true},
		{"unused entry", map[int]PartitionEdit{3: {UUID: newB}, 4: {UUID: newA}}, 0, true},
	} {
		for _, ss := range []int{512, 4096} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, ss), func(t *testing.T) {
				m, parts := newImage(t, ss)
				before := m.Clone()
				c := &countingFile{File: m}
				d, err := OpenFile(c, "mem", int64(len(m.B)), 0, true)
				if err != nil {
					t.Fatal(err)
				}
				err = d.Edit(tc.edit)
				if (err != nil) != tc.wantErr {
					t.Fatalf("Edit: %v, want error %v", err, tc.wantErr)
				}
				if c.writes != tc.writes || c.syncs != tc.writes/2 {
					t.Errorf("Edit made %d writes and %d syncs, want %d and %d", c.writes, c.syncs, tc.writes, tc.writes/2)
				}
				if tc.writes == 0 {
					if !bytes.Equal(before.B, m.B) {
						t.Errorf("Edit changed the disk")
					}
					return
				}
				for i, p := range parts {
					parts[i] = tc.edit[p.Number].apply(p)
				}
				if tab := readMem(t, m); tab.NeedsRepair() || !reflect.DeepEqual(tab.Partitions, parts) {
					t.Errorf("after Edit: %v, %v, partitions:\n got %v\nwant %v", tab.PrimaryErr, tab.BackupErr, tab.Partitions, parts)
				}
			})
		}
	}
}

// cutFile stops writing after a number of writes, as a power cut
// would; with torn set, the write that is cut lands half.
type cutFile struct {
	*testutil.MemFile
	left int
	torn bool
}

var errCut = errors.New("power cut")

func (c *cutFile) WriteAt(p []byte, off int64) (int, error) {
	if c.left == 0 {
		if c.torn {
			c.MemFile.WriteAt(p[:len(p)/2], off)
			c.torn = false
		}
		return 0, errCut
	}
	c.left--
	return c.MemFile.WriteAt(p, off)
}

// TestCrashSafety cuts SetAttributesOf, and Edit changing UUIDs and
// attributes together, before and after each of its writes, whole or
// torn, and then cuts the Repair that follows at each of its writes: every
// state in between must read as the old state of every edited partition
// or the new state of every one, never a mix, and once repaired, show the
// same state with both copies agreeing. The edits change one partition,
// two whose entries share a sector, and two whose entries lie in
// different sectors (2 and 5 with 512-byte sectors).
func TestCrashSafety(t *testing.T) {
	newUUID := func(n int) *guid.GUID {
		u := guid.MustParse(fmt.Sprintf("5f1c0000-0000-4000-8000-%012d", n))
		return &u
	}
	for _, ss := range []int{512, 4096} {
		for _, torn := range []bool{false, true} {
			for _, withUUID := range []bool{false, true} {
				for _, numbers := range [][]int{{2}, {2, 3}, {2, 5}} {
					crashOne(t, ss, torn, numbers, func(p Partition) PartitionEdit {
						a := p.Attributes&^(0x1ff<<48) | 1<<61
						e := PartitionEdit{Attributes: &a}
						if withUUID {
							e.UUID = newUUID(p.Number)
						}
						return e
					})
				}
			}
		}
	}
}

// apply returns p with e applied.
func (e PartitionEdit) apply(p Partition) Partition {
	if e.Attributes != nil {
		p.Attributes = *e.Attributes
	}
	if e.UUID != nil {
		p.UUID = *e.UUID
	}
	return p
}

// crashOne is TestCrashSafety for one edit, made by change for each
// partition in numbers; with attributes only, it goes through
// SetAttributesOf.
func crashOne(t *testing.T, ss int, torn bool, numbers []int, change func(Partition) PartitionEdit) {
	orig, parts := newImage(t, ss)
	edit := map[int]PartitionEdit{}
	attrsOnly := map[int]uint64{}
	for _, p := range parts {
		if slices.Contains(numbers, p.Number) {
			edit[p.Number] = change(p)
			if e := edit[p.Number]; e.UUID == nil {
				attrsOnly[p.Number] = *e.Attributes
			}
		}
	}
	if len(attrsOnly) < len(edit) {
		attrsOnly = nil
	}
	// isNew reports whether the partitions read back show the new state;
	// it fails on a mix or any other change.
	isNew := func(t *testing.T, got []Partition) bool {
		t.Helper()
		var old, new int
		for i, q := range got {
			e, ok := edit[q.Number]
			switch want := parts[i]; {
			case !ok && !reflect.DeepEqual(q, want):
				t.Fatalf("unedited partition %v, want %v", q, want)
			case ok && reflect.DeepEqual(q, e.apply(want)):
				new++
			case ok && reflect.DeepEqual(q, want):
				old++
			case ok:
				t.Fatalf("partition %v, want %v or %v", q, want, e.apply(want))
			}
		}
		if old > 0 && new > 0 {
			t.Fatalf("%d partitions show the old state and %d the new", old, new)
		}
		return new > 0
	}
	sawOld, sawNew := false, false
	for cut := 0; cut <= 4; cut++ {
		t.Run(fmt.Sprintf("%d/torn=%v/%v/uuid=%v/cut=%d", ss, torn, numbers, attrsOnly == nil, cut), func(t *testing.T) {
			m := orig.Clone()
			cf := &cutFile{MemFile: m, left: cut, torn: torn}
			d, err := OpenFile(cf, "mem", int64(len(m.B)), 0, true)
			if err != nil {
				t.Fatal(err)
			}
			if attrsOnly != nil {
				err = d.SetAttributesOf(attrsOnly)
			} else {
				err = d.Edit(edit)
			}
			if (err == nil) != (cut == 4) {
				t.Fatalf("edit cut after %d writes: %v", cut, err)
			}
			got := isNew(t, readMem(t, m).Partitions)
			// Backup first: once the new state is visible, the
			// backup holds it too, so losing the primary later
			// cannot roll a completed change back.
			if got {
				st, _ := openMem(t, m, 0, false).load()
				if st.backup == nil {
					t.Fatalf("new state visible but the backup is broken: %v", st.backupErr)
				}
				if !isNew(t, st.backup.parts) {
					t.Fatalf("new state visible but the backup has the old one")
				}
			}
			sawOld = sawOld || !got
			sawNew = sawNew || got
			if cut == 4 && !got {
				t.Fatal("complete edit left the old state")
			}
			cutState := m.Clone()
			for rcut := 0; ; rcut++ {
				m := cutState.Clone()
				d, _ := OpenFile(&cutFile{MemFile: m, left: rcut, torn: torn}, "mem", int64(len(m.B)), 0, true)
				err := d.Repair()
				if isNew(t, readMem(t, m).Partitions) != got {
					t.Fatalf("Repair cut after %d writes changed new=%v", rcut, got)
				}
				if err == nil {
					if tab := readMem(t, m); tab.NeedsRepair() {
						t.Fatalf("after Repair: %v, %v", tab.PrimaryErr, tab.BackupErr)
					}
					break
				}
				if rcut > 4 {
					t.Fatalf("Repair still failing after %d writes: %v", rcut, err)
				}
			}
		})
	}
	if !sawOld || !sawNew {
		t.Errorf("%d/torn=%v/%v: cuts produced old: %v, new: %v; want both", ss, torn, numbers, sawOld, sawNew)
	}
}

func TestLayout(t *testing.T) {
	parts := make([]Partition, 3)
	if err := Layout(8<<20, 512, parts, []int64{1 << 20, 1000, 1 << 20}); err != nil {
		t.Fatal(err)
	}
	want := [][2]uint64{{2048, 4095}, {4096, 4097}, {6144, 8191}}
	for i, p := range parts {
		if [2]uint64{p.FirstLBA, p.LastLBA} != want[i] {
			t.Errorf("partition %d at LBA %d-%d, want %v", i, p.FirstLBA, p.LastLBA, want[i])
		}
	}
	for _, tc := range []struct {
		size  int64
		ss    int
		sizes []int64
	}{
		{8 << 20, 512, []int64{7 << 20}},      // no room for the backup table
		{8 << 20, 512, []int64{1 << 20, 0}},   // empty partition
		{8 << 20, 4096, []int64{1, 1, 1, -1}}, // negative size
		{8 << 20, 520, []int64{1}},            // bad sector size
		{8 << 10, 512, []int64{1}},            // disk too small
	} {
		if err := Layout(tc.size, tc.ss, make([]Partition, len(tc.sizes)), tc.sizes); err == nil {
			t.Errorf("Layout(%d, %d, %v) succeeded", tc.size, tc.ss, tc.sizes)
		}
	}
}

func TestCreateErrors(t *testing.T) {
	u := func(n int) guid.GUID { return guid.MustParse(fmt.Sprintf("a0000000-0000-4000-8000-%012d", n)) }
	ok := Partition{Type: TypeESP, UUID: u(1), FirstLBA: 2048, LastLBA: 4095}
	for _, tc := range []struct {
		name  string
		disk  guid.GUID
		parts []Partition
	}{
		{"zero disk GUID", guid.Zero, []Partition{ok}},
		{"zero type", testDiskGUID, []Partition{{UUID: u(1), FirstLBA: 2048, LastLBA: 4095}}},
		{"zero UUID", testDiskGUID, []Partition{{Type: TypeESP, FirstLBA: 2048, LastLBA: 4095}}},
		{"before first usable", testDiskGUID, []Partition{{Type: TypeESP, UUID: u(1), FirstLBA: 33, LastLBA: 4095}}},
		{"past last usable", testDiskGUID, []Partition{{Type: TypeESP, UUID: u(1), FirstLBA: 2048, LastLBA: 16383 - 32}}},
		{"reversed", testDiskGUID, []Partition{{Type: TypeESP, UUID: u(1), FirstLBA: 4095, LastLBA: 2048}}},
		{"overlap", testDiskGUID, []Partition{ok, {Type: TypeESP, UUID: u(2), FirstLBA: 4095, LastLBA: 5000}}},
		{"number twice", testDiskGUID, []Partition{ok, {Number: 1, Type: TypeESP, UUID: u(2), FirstLBA: 5000, LastLBA: 6000}}},
		{"number too big", testDiskGUID, []Partition{{Number: 129, Type: TypeESP, UUID: u(1), FirstLBA: 2048, LastLBA: 4095}}},
		{"long name", testDiskGUID, []Partition{{Type: TypeESP, UUID: u(1), FirstLBA: 2048, LastLBA: 4095, Name: "0123456789012345678901234567890123456"}}},
	} {
		m := testutil.NewDisk(8 << 20)
		if err := Create(m, int64(len(m.B)), 512, tc.disk, tc.parts); err == nil {
			t.Errorf("%s: Create succeeded", tc.name)
		}
		if !bytes.Equal(m.B, make([]byte, len(m.B))) {
			t.Errorf("%s: failed Create wrote to the disk", tc.name)
		}
	}
	// 36 UTF-16 units is the limit; a rune outside the BMP takes two.
	m := testutil.NewDisk(8 << 20)
	name := "012345678901234567890123456789012\U0001F600"
	if err := Create(m, int64(len(m.B)), 512, testDiskGUID, []Partition{{Type: TypeESP, UUID: u(1), FirstLBA: 2048, LastLBA: 4095, Name: name}}); err != nil {
		t.Fatal(err)
	}
	if got := readMem(t, m).Partitions[0].Name; got != name {
		t.Errorf("name %q, want %q", got, name)
	}
}

// FuzzRead reads arbitrary disks. Read must not panic, and what it
// accepts must be sane: partitions inside the usable range, the usable
// range inside the disk. Repair of an accepted disk must either fail or
// produce a disk with two agreeing copies of the same table. With fix
// set, the CRCs of whatever looks like a header are made valid first, so
// that the fuzzer gets past them to the checks behind.
func FuzzRead(f *testing.F) {
	for _, ss := range []int{512, 4096} {
		m, _ := newSmallImage(f, ss)
		f.Add(m.B, false)
		b := m.Clone()
		b.B[ss+70] ^= 1
		f.Add(b.B, false)
		b = m.Clone()
		clear(b.B[len(b.B)-ss:])
		f.Add(b.B, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		// Repair writes; the fuzzer's input must stay as it is.
		data = append([]byte(nil), data...)
		if fix {
			fixCRCs(data)
		}
		d, err := OpenFile(&testutil.MemFile{B: data, Fixed: true}, "fuzz", int64(len(data)), 0, true)
		if err != nil {
			return
		}
		tab, err := d.Read()
		if err != nil {
			return
		}
		last := uint64(len(data)/tab.SectorSize) - 1
		if tab.FirstUsableLBA < 2 || tab.LastUsableLBA >= last || tab.FirstUsableLBA > tab.LastUsableLBA {
			t.Fatalf("usable range %d-%d on a disk whose last LBA is %d", tab.FirstUsableLBA, tab.LastUsableLBA, last)
		}
		for _, p := range tab.Partitions {
			if p.FirstLBA < tab.FirstUsableLBA || p.LastLBA > tab.LastUsableLBA || p.FirstLBA > p.LastLBA {
				t.Fatalf("%v outside usable range %d-%d", p, tab.FirstUsableLBA, tab.LastUsableLBA)
			}
		}
		if err := checkOverlap(tab.Partitions); err != nil {
			t.Fatal(err)
		}
		if err := d.Repair(); err != nil {
			return
		}
		after, err := d.Read()
		if err != nil {
			t.Fatalf("Read after Repair: %v", err)
		}
		if after.NeedsRepair() || !reflect.DeepEqual(after.Partitions, tab.Partitions) || after.DiskGUID != tab.DiskGUID {
			t.Fatalf("Repair turned %+v into %+v", tab, after)
		}
	})
}

// fixCRCs makes the entry array and header CRCs of every GPT header in b
// (at LBA 1 or the last LBA, for 512 and 4096-byte sectors) valid.
func fixCRCs(b []byte) {
	le := binary.LittleEndian
	for _, ss := range []int{512, 4096} {
		for _, lba := range []int{1, len(b)/ss - 1} {
			off := lba * ss
			if lba < 1 || off+ss > len(b) || string(b[off:off+8]) != signature {
				continue
			}
			h := b[off : off+ss]
			start := le.Uint64(h[72:]) * uint64(ss)
			n := uint64(le.Uint32(h[80:])) * uint64(le.Uint32(h[84:]))
			if start <= uint64(len(b)) && n <= uint64(len(b))-start {
				le.PutUint32(h[88:], crc32.ChecksumIEEE(b[start:start+n]))
			}
			if size := le.Uint32(h[12:]); size >= headerSize && size <= uint32(ss) {
				le.PutUint32(h[16:], headerCRC(h[:size]))
			}
		}
	}
}

// newSmallImage is a fuzz seed: the smallest disk that has room for a
// partition of a few sectors.
func newSmallImage(t testing.TB, ss int) (*testutil.MemFile, []Partition) {
	t.Helper()
	m := testutil.NewDisk((2*16384/ss + 8) * ss)
	first, last, err := usableRange(int64(len(m.B)), ss)
	if err != nil {
		t.Fatal(err)
	}
	parts := []Partition{{Number: 1, Type: TypeRootX86_64, UUID: testDiskGUID, FirstLBA: first, LastLBA: last, Name: "r", Attributes: 1 << 48}}
	if err := Create(m, int64(len(m.B)), ss, testDiskGUID, parts); err != nil {
		t.Fatal(err)
	}
	return m, parts
}
