package efivar

// Interop with efibootmgr. efibootmgr needs efivarfs, which this package's
// test machines lack, but libefivar accepts any directory named by
// EFIVARFS_PATH and then reads and writes it exactly as it would efivarfs:
// one file per variable, attributes word first. It opens without O_TRUNC
// (right for efivarfs, where every write replaces the variable), so on a plain
// directory a shorter rewrite leaves the old tail behind; the tests below
// only let it make same-length rewrites.

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/afero"

	"github.com/abboot/abboot/internal/testutil"
)

func efibootmgr(t *testing.T, dir string, args ...string) string {
	t.Helper()
	testutil.RequireTool(t, "efibootmgr")
	cmd := exec.Command("efibootmgr", args...)
	cmd.Env = append(os.Environ(), "EFIVARFS_PATH="+dir+"/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("efibootmgr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestEfibootmgrReadsOurs checks that efibootmgr -v reads what we write and
// prints our String form for each entry.
func TestEfibootmgrReadsOurs(t *testing.T) {
	dir := t.TempDir()
	v := Open(dir)
	pci := DevicePath{Raw{Type: 2, SubType: 1, Data: mustHex(t, "d041030a00000000")}, Raw{Type: 1, SubType: 1, Data: []byte{1, 1}}, espPath[0], FilePath{Path: `\EFI\abboot\b.efi`}}
	entries := map[uint16]*LoadOption{
		0:      abbootA,
		0xBEEF: {Description: "inactive on PCI", FilePath: pci},
		0x0C:   {Attributes: LoadOptionActive, Description: "with data", FilePath: espPath, OptionalData: []byte{0xde, 0xad, 0xbe, 0xef, 0, 1}},
	}
	for n, o := range entries {
		if err := v.SetBootEntry(n, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.SetBootOrder([]uint16{0xBEEF, 0, 5}); err != nil {
		t.Fatal(err)
	}
	if err := v.SetBootNext(0x0C); err != nil {
		t.Fatal(err)
	}
	if err := v.Set("BootCurrent", GlobalVariable, AttrBootserviceAccess|AttrRuntimeAccess, []byte{0xef, 0xbe}); err != nil {
		t.Fatal(err)
	}

	out := efibootmgr(t, dir, "-v")
	for _, want := range []string{"BootNext: 000C\n", "BootCurrent: BEEF\n", "BootOrder: BEEF,0000,0005\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("efibootmgr -v output lacks %q:\n%s", want, out)
		}
	}
	line := regexp.MustCompile(`(?m)^Boot([0-9A-F]{4})([* ]) ([^\t\n]*)\t(.*)$`)
	seen := 0
	for _, m := range line.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.ParseUint(m[1], 16, 16)
		o, ok := entries[uint16(n)]
		if !ok {
			t.Errorf("efibootmgr shows Boot%s, which we did not write", m[1])
			continue
		}
		seen++
		if active := m[2] == "*"; active != (o.Attributes&LoadOptionActive != 0) || m[3] != o.Description {
			t.Errorf("efibootmgr shows Boot%s%s %q, want %+v", m[1], m[2], m[3], o)
		}
		// efibootmgr names the nodes we keep as Raw and prints optional
		// data after the path; the HD and File nodes must read the same.
		var known DevicePath
		for _, n := range o.FilePath {
			if _, raw := n.(Raw); !raw {
				known = append(known, n)
			}
		}
		exact := len(known) == len(o.FilePath) && o.OptionalData == nil
		if !strings.Contains(m[4], known.String()) || (exact && m[4] != known.String()) {
			t.Errorf("efibootmgr shows Boot%s path %q, we print %q", m[1], m[4], o.FilePath)
		}
	}
	if seen != len(entries) {
		t.Errorf("efibootmgr listed %d entries, want %d:\n%s", seen, len(entries), out)
	}
}

// TestEfibootmgrWritesOurs lets efibootmgr change our variables and reads
// the result.
func TestEfibootmgrWritesOurs(t *testing.T) {
	dir := t.TempDir()
	v := Open(dir)
	for _, n := range []uint16{0, 1} {
		if err := v.SetBootEntry(n, abbootA); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.SetBootOrder([]uint16{0, 1}); err != nil {
		t.Fatal(err)
	}
	efibootmgr(t, dir, "-o", "0001,0000")
	efibootmgr(t, dir, "-n", "0001")
	efibootmgr(t, dir, "-b", "0000", "-A")
	efibootmgr(t, dir, "-b", "0001", "-B") // unlinks Boot0001, rewrites BootOrder shorter

	if o, err := v.BootEntry(0); err != nil || o.Attributes != 0 || !reflect.DeepEqual(o.FilePath, abbootA.FilePath) {
		t.Errorf("Boot0000 after efibootmgr -A = %+v, %v", o, err)
	}
	if _, err := v.BootEntry(1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Boot0001 after efibootmgr -B: %v, want ErrNotFound", err)
	}
	if n, ok, err := v.BootNext(); err != nil || !ok || n != 1 {
		t.Errorf("BootNext after efibootmgr -n = %d, %v, %v", n, ok, err)
	}
	// libefivar does not truncate (see above), so BootOrder holds its new
	// first entry followed by the tail of the old value.
	if order, err := v.BootOrder(); err != nil || len(order) == 0 || order[0] != 0 {
		t.Errorf("BootOrder after efibootmgr -o and -B = %v, %v", order, err)
	}
}

// TestEfibootmgrCreate lets efibootmgr build a Boot#### entry for a real
// GPT partition (through a loop device) and checks that we decode it to the
// same value as our golden vector.
func TestEfibootmgrCreate(t *testing.T) {
	testutil.RequireTool(t, "efibootmgr")
	testutil.RequireTool(t, "sgdisk")
	testutil.RequireTool(t, "losetup")
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	tmp := t.TempDir()
	img := filepath.Join(tmp, "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sgdisk", "-n1:2048:+30M", "-t1:ef00", "-u1:"+partUUID.String(), img).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })

	dir := filepath.Join(tmp, "efivars")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	efibootmgr(t, dir, "-c", "-d", loop, "-p", "1", "-L", "abboot-a", "-l", `\EFI\abboot\a.efi`)

	v := Open(dir)
	attrs, data, err := v.Get("Boot0000", GlobalVariable)
	if err != nil {
		t.Fatal(err)
	}
	if attrs != AttrNonVolatile|AttrBootserviceAccess|AttrRuntimeAccess {
		t.Errorf("efibootmgr wrote attributes %#x", attrs)
	}
	if !bytes.Equal(data, mustHex(t, efibootmgrBoot0000)) {
		t.Errorf("efibootmgr wrote\n%x\nour golden vector is\n%x", data, mustHex(t, efibootmgrBoot0000))
	}
	if o, err := v.BootEntry(0); err != nil || !reflect.DeepEqual(o, abbootA) {
		t.Errorf("BootEntry(0) = %+v, %v; want %+v", o, err, abbootA)
	}
	if order, err := v.BootOrder(); err != nil || !reflect.DeepEqual(order, []uint16{0}) {
		t.Errorf("BootOrder = %v, %v", order, err)
	}
	// And our own write of the same entry is byte-identical to efibootmgr's.
	mine := OpenFS(afero.NewMemMapFs())
	if err := mine.SetBootEntry(0, abbootA); err != nil {
		t.Fatal(err)
	}
	if _, b, _ := mine.Get("Boot0000", GlobalVariable); !bytes.Equal(b, data) {
		t.Errorf("our Boot0000\n%x\ndiffers from efibootmgr's\n%x", b, data)
	}
}
