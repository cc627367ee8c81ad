package gpt

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/abboot/abboot/internal/testutil"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/tool"
)

// These tests check our tables against sgdisk (gdisk) and cgpt on image
// files, which needs no root. sgdisk and cgpt treat image files as having
// 512-byte sectors, so interop is checked at that size only.

// sgdiskVerify runs `sgdisk -v` on path and reports whether it found the
// disk healthy. sgdisk says "No problems found" even when it has just
// rebuilt a broken copy in memory, so the warnings count too.
func sgdiskVerify(t *testing.T, path string) (string, bool) {
	t.Helper()
	if _, err := tool.Path("sgdisk"); err != nil {
		t.Fatal(err)
	}
	out, err := tool.Run("sgdisk", "-v", path)
	s := string(out)
	ok := err == nil && strings.Contains(s, "No problems found")
	for _, bad := range []string{"ERROR", "CRC", "corrupt", "invalid"} {
		ok = ok && !strings.Contains(s, bad)
	}
	return s, ok
}

// writeImage writes the test layout with Create to an 8 MiB image file.
func writeImage(t *testing.T) (string, []Partition) {
	t.Helper()
	m, parts := newImage(t, 512)
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, m.B, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, parts
}

func readFile(t *testing.T, path string) *Table {
	t.Helper()
	tab, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if tab.NeedsRepair() {
		t.Errorf("%s needs repair: %v, %v", path, tab.PrimaryErr, tab.BackupErr)
	}
	return tab
}

// sgdiskInfo is what `sgdisk -i N` says about a partition.
func sgdiskInfo(t *testing.T, path string, n int) Partition {
	t.Helper()
	out := testutil.Run(t, "sgdisk", "-i", strconv.Itoa(n), path)
	field := func(re string) string {
		m := regexp.MustCompile(`(?m)^` + re).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("sgdisk -i %d: no %q in:\n%s", n, re, out)
		}
		return m[1]
	}
	num := func(re string, base int) uint64 {
		v, err := strconv.ParseUint(field(re), base, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	g := func(re string) guid.GUID {
		u, err := guid.Parse(field(re))
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	return Partition{
		Number:     n,
		Type:       g(`Partition GUID code: (\S+)`),
		UUID:       g(`Partition unique GUID: (\S+)`),
		FirstLBA:   num(`First sector: (\d+)`, 10),
		LastLBA:    num(`Last sector: (\d+)`, 10),
		Attributes: num(`Attribute flags: ([0-9A-Fa-f]+)`, 16),
		Name:       field(`Partition name: '(.*)'`),
	}
}

func TestInteropSgdiskReadsCreate(t *testing.T) {
	path, parts := writeImage(t)
	if out, ok := sgdiskVerify(t, path); !ok {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	out := testutil.Run(t, "sgdisk", "-p", path)
	if !strings.Contains(out, "Disk identifier (GUID): "+strings.ToUpper(testDiskGUID.String())) {
		t.Errorf("sgdisk -p does not show disk GUID %s:\n%s", testDiskGUID, out)
	}
	if !strings.Contains(out, "First usable sector is 34, last usable sector is 16350") {
		t.Errorf("sgdisk -p usable range:\n%s", out)
	}
	for _, p := range parts {
		if got := sgdiskInfo(t, path, p.Number); !reflect.DeepEqual(got, p) {
			t.Errorf("sgdisk -i %d:\n got %v\nwant %v", p.Number, got, p)
		}
	}
}

func TestInteropReadSgdisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []Partition{
		{1, TypeESP, guid.MustParse("3e0a9f51-4c1b-4e0e-9d51-3a3a1c9e0001"), 2048, 6143, 0, "EFI system"},
		{2, TypeRootX86_64, guid.MustParse("3e0a9f51-4c1b-4e0e-9d51-3a3a1c9e0002"), 6144, 10239, 1<<48 | 1<<56 | 1<<2, "abboot-root-a"},
		{4, TypeRootVerityX86_64, guid.MustParse("3e0a9f51-4c1b-4e0e-9d51-3a3a1c9e0004"), 10240, 10400, 0, "abboot-verity-a"},
	}
	args := []string{"-o", "-U", testDiskGUID.String()}
	for _, p := range want {
		n := p.Number
		args = append(args,
			fmt.Sprintf("-n%d:%d:%d", n, p.FirstLBA, p.LastLBA),
			fmt.Sprintf("-t%d:%s", n, p.Type),
			fmt.Sprintf("-u%d:%s", n, p.UUID),
			fmt.Sprintf("-c%d:%s", n, p.Name))
		for bit := range 64 {
			if p.Attributes&(1<<bit) != 0 {
				args = append(args, fmt.Sprintf("-A%d:set:%d", n, bit))
			}
		}
	}
	testutil.Run(t, "sgdisk", append(args, path)...)
	tab := readFile(t, path)
	if tab.DiskGUID != testDiskGUID || tab.SectorSize != 512 || tab.FirstUsableLBA != 34 || tab.LastUsableLBA != 32734 {
		t.Errorf("table %+v", tab)
	}
	if !reflect.DeepEqual(tab.Partitions, want) {
		t.Errorf("partitions:\n got %v\nwant %v", tab.Partitions, want)
	}
}

// TestInteropCgpt has ChromeOS cgpt edit a table this package wrote: it
// must leave both copies valid and agreeing and the bits it does not own
// as they were. (What the cgpt bits mean is pkg/slotstore's, tested
// there against cgpt.)
func TestInteropCgpt(t *testing.T) {
	path, parts := writeImage(t)
	for _, tc := range []struct {
		prio, tries, succ string
		want              uint64 // attribute bits 48-63 after
	}{{"5", "3", "0", 0x35}, {"1", "0", "1", 0x101}} {
		testutil.Run(t, "cgpt", "add", "-i", "3", "-P", tc.prio, "-T", tc.tries, "-S", tc.succ, path)
		tab := readFile(t, path)
		if tab.NeedsRepair() {
			t.Errorf("after cgpt add: primary %v, backup %v", tab.PrimaryErr, tab.BackupErr)
		}
		p, ok := tab.ByName("abboot-root-b")
		if !ok {
			t.Fatal("abboot-root-b gone after cgpt add")
		}
		if p.Attributes>>48 != tc.want {
			t.Errorf("after cgpt add -P %s -T %s -S %s: attributes %#x, want %#x in bits 48-63", tc.prio, tc.tries, tc.succ, p.Attributes, tc.want<<48)
		}
		// The bits cgpt does not own are kept (bit 0 was set by Create).
		if p.Attributes&(1<<48-1) != parts[2].Attributes&(1<<48-1) {
			t.Errorf("cgpt add changed bits 0-47: %#x", p.Attributes)
		}
	}
	if out, ok := sgdiskVerify(t, path); !ok {
		t.Errorf("sgdisk -v after edits:\n%s", out)
	}
}

// TestInteropEditUUID changes two partitions' unique GUIDs and one's
// attributes in one Edit, as an install does, and checks that sgdisk sees
// them and finds both copies healthy.
func TestInteropEditUUID(t *testing.T) {
	path, parts := writeImage(t)
	d, err := Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	root, verity := guid.FromBigEndian(bytes.Repeat([]byte{0x5f}, 16)), guid.FromBigEndian(bytes.Repeat([]byte{0x1c}, 16))
	attrs := parts[2].Attributes&^(0x1ff<<48) | 0x32<<48
	if err := d.Edit(map[int]PartitionEdit{3: {UUID: &root, Attributes: &attrs}, 5: {UUID: &verity}}); err != nil {
		t.Fatal(err)
	}
	parts[2].UUID, parts[2].Attributes, parts[3].UUID = root, attrs, verity
	for _, want := range parts {
		if got := sgdiskInfo(t, path, want.Number); !reflect.DeepEqual(got, want) {
			t.Errorf("sgdisk -i %d:\n got %v\nwant %v", want.Number, got, want)
		}
	}
	if out, ok := sgdiskVerify(t, path); !ok {
		t.Errorf("sgdisk -v after Edit:\n%s", out)
	}
}

// TestInteropRepair breaks each copy in turn and checks that sgdisk
// finds nothing wrong after our Repair.
func TestInteropRepair(t *testing.T) {
	for _, tc := range []struct {
		name string
		lba  func(size int64) int64
	}{
		{"primary", func(int64) int64 { return 1 }},
		{"backup", func(size int64) int64 { return size/512 - 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, parts := writeImage(t)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := f.Stat()
			if _, err := f.WriteAt(make([]byte, 512), tc.lba(fi.Size())*512); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if out, ok := sgdiskVerify(t, path); ok {
				t.Fatalf("sgdisk -v finds no problem with a wiped %s header:\n%s", tc.name, out)
			}
			d, err := Open(path, true)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if err := d.Repair(); err != nil {
				t.Fatal(err)
			}
			if out, ok := sgdiskVerify(t, path); !ok {
				t.Errorf("sgdisk -v after Repair:\n%s", out)
			}
			if got := readFile(t, path).Partitions; !reflect.DeepEqual(got, parts) {
				t.Errorf("partitions after Repair:\n got %v\nwant %v", got, parts)
			}
		})
	}
}

// TestInteropBlockDevice opens a 4096-byte-sector loop device, so that
// the sector size and size come from BLKSSZGET and BLKGETSIZE64, and
// checks the table against sgdisk, which reads 4096-byte sectors from a
// block device (not from an image file). It needs root and loop devices.
func TestInteropBlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	m, parts := newImage(t, 4096)
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, m.B, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", "--sector-size", "4096", path).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	d, err := Open(dev, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.SectorSize() != 4096 || d.Size() != int64(len(m.B)) {
		t.Errorf("%s: sector size %d, size %d; want 4096, %d", dev, d.SectorSize(), d.Size(), len(m.B))
	}
	attrs := parts[1].Attributes&^(0x1ff<<48) | 0x49<<48
	if err := d.SetAttributes(2, attrs); err != nil {
		t.Fatal(err)
	}
	parts[1].Attributes = attrs
	if out := testutil.Run(t, "sgdisk", "-p", dev); !strings.Contains(out, "Sector size (logical/physical): 4096/") {
		t.Errorf("sgdisk -p %s:\n%s", dev, out)
	}
	for _, p := range parts {
		if got := sgdiskInfo(t, dev, p.Number); !reflect.DeepEqual(got, p) {
			t.Errorf("sgdisk -i %d:\n got %v\nwant %v", p.Number, got, p)
		}
	}
	if got := readFile(t, path).Partitions; !reflect.DeepEqual(got, parts) {
		t.Errorf("image file after SetAttributes on %s:\n got %v\nwant %v", dev, got, parts)
	}
}
