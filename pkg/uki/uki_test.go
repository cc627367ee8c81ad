package uki

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func writeRandom(t *testing.T, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBuildInterop builds a UKI from the real stub and checks it with
// objdump (binutils) and with our own reader.
func TestBuildInterop(t *testing.T) {
	dir := t.TempDir()
	kernel := writeRandom(t, filepath.Join(dir, "vmlinuz"), 3<<20+17)
	initrd := writeRandom(t, filepath.Join(dir, "initrd"), 1<<20+5)
	spec := Spec{
		Kernel:  filepath.Join(dir, "vmlinuz"),
		Initrd:  filepath.Join(dir, "initrd"),
		Cmdline: "console=ttyS0 panic=10",
		OSRel:   "ID=abboot-demo\nVERSION_ID=2\n",
	}
	out := filepath.Join(dir, "uki.efi")
	if err := Build(spec, out); err != nil {
		t.Fatal(err)
	}
	objdump, err := exec.Command("objdump", "-h", out).CombinedOutput()
	if err != nil {
		t.Fatalf("objdump -h: %v: %s", err, objdump)
	}
	for _, s := range []string{".linux", ".initrd", ".cmdline", ".osrel"} {
		if !strings.Contains(string(objdump), s) {
			t.Errorf("objdump -h does not list %s:\n%s", s, objdump)
		}
	}
	img, err := ReadFile(out, ".linux", ".initrd", ".cmdline", ".osrel")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{".linux": kernel, ".initrd": initrd, ".cmdline": []byte(spec.Cmdline), ".osrel": []byte(spec.OSRel)} {
		if !bytes.Equal(img.Sections[name], want) {
			t.Errorf("section %s: %d bytes read back, want %d identical bytes", name, len(img.Sections[name]), len(want))
		}
	}
	if v := img.OSRelease()["VERSION_ID"]; v != "2" {
		t.Errorf("VERSION_ID = %q, want 2", v)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if c, err := ReadCmdline(f); err != nil || c != spec.Cmdline {
		t.Errorf("ReadCmdline = %q, %v; want %q", c, err, spec.Cmdline)
	}
	// Parse gives the same sections, without copying them, and refuses
	// the file cut short in .initrd (Read would pad it with zeros).
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	all, err := Read(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(parsed.Sections, all.Sections, bytes.Equal) {
		t.Errorf("Parse and Read disagree on the sections")
	}
	if l := parsed.Sections[".linux"]; &l[0] != &b[bytes.Index(b, kernel)] {
		t.Errorf("Parse copied .linux")
	}
	if _, err := Parse(b[:bytes.Index(b, initrd)+len(initrd)/2]); err == nil {
		t.Errorf("Parse of a file cut short in .initrd succeeded")
	}
}

func TestCmdline(t *testing.T) {
	for _, tc := range []struct {
		section *string
		want    string
		wantErr bool
	}{
		{section: nil, want: ""},
		{section: ptr(""), want: ""},
		{section: ptr("a b"), want: "a b"},
		{section: ptr("a b\n"), want: "a b"},
		{section: ptr("a b\x00\x00\x00"), want: "a b"},
		{section: ptr("a b \r\n\t\x00"), want: "a b"},
		{section: ptr("  a"), want: "  a"},
		{section: ptr("a\x00b"), wantErr: true},
		{section: ptr("a\x00b \x00"), wantErr: true},
	} {
		img := &Image{Sections: map[string][]byte{}}
		if tc.section != nil {
			img.Sections[".cmdline"] = []byte(*tc.section)
		}
		got, err := img.Cmdline()
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("Cmdline of %q = %q, %v; want %q, error %v", deref(tc.section), got, err, tc.want, tc.wantErr)
		}
	}
}

func ptr(s string) *string { return &s }

func deref(s *string) string {
	if s == nil {
		return "(no section)"
	}
	return *s
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "uki.efi")
	for _, spec := range []Spec{
		{Stub: filepath.Join(dir, "nostub"), Kernel: "/dev/null", Initrd: "/dev/null"},
		{Kernel: filepath.Join(dir, "missing"), Initrd: "/dev/null", Cmdline: "x"},
	} {
		if err := Build(spec, out); err == nil {
			t.Errorf("Build(%+v) succeeded", spec)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("Build(%+v) failed but left %s", spec, out)
		}
	}
	if _, err := ReadFile("/dev/null", ".linux"); err == nil {
		t.Error("ReadFile(/dev/null) succeeded")
	}
}

func FuzzRead(f *testing.F) {
	f.Add([]byte("MZ"))
	if b, err := os.ReadFile(DefaultStub); err == nil {
		f.Add(b[:min(len(b), 4096)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		Read(bytes.NewReader(b), ".linux")
		ReadCmdline(bytes.NewReader(b))
		// Parse refuses a section that ends after the file, which Read
		// pads with zeros; otherwise they agree.
		p, err := Parse(b)
		if err != nil {
			return
		}
		r, err := Read(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("Parse succeeded, Read failed: %v", err)
		}
		if !maps.EqualFunc(p.Sections, r.Sections, bytes.Equal) {
			t.Fatalf("Parse and Read disagree: %q, %q", p.Sections, r.Sections)
		}
	})
}

// TestBuildStamp: the UKI carries the stub's time stamp, not the build's,
// and a CheckSum that matches its bytes; peChecksum agrees with the
// checksum the stub's own linker stored.
func TestBuildStamp(t *testing.T) {
	stub, err := os.ReadFile(DefaultStub)
	if err != nil {
		t.Skip(err)
	}
	at, err := peChecksumOffset(stub)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := checksum(t, stub, at), binary.LittleEndian.Uint32(stub[at:]); want != 0 && got != want {
		t.Errorf("peChecksum(stub) = %#x, the stub says %#x", got, want)
	}
	dir := t.TempDir()
	writeRandom(t, filepath.Join(dir, "vmlinuz"), 1<<20+3)
	writeRandom(t, filepath.Join(dir, "initrd"), 4097)
	out := filepath.Join(dir, "uki.efi")
	if err := Build(Spec{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd"), Cmdline: "x"}, out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	coff := int(binary.LittleEndian.Uint32(b[0x3c:])) + 4
	stubCoff := int(binary.LittleEndian.Uint32(stub[0x3c:])) + 4
	if got, want := binary.LittleEndian.Uint32(b[coff+4:]), binary.LittleEndian.Uint32(stub[stubCoff+4:]); got != want {
		t.Errorf("TimeDateStamp = %#x, want the stub's %#x", got, want)
	}
	if at, err = peChecksumOffset(b); err != nil {
		t.Fatal(err)
	}
	if got, want := binary.LittleEndian.Uint32(b[at:]), checksum(t, b, at); got != want {
		t.Errorf("CheckSum = %#x, want %#x", got, want)
	}
}

func checksum(t *testing.T, b []byte, at int) uint32 {
	t.Helper()
	sum, err := peChecksum(bytes.NewReader(b), at)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}
