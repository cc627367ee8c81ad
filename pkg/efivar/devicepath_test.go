package efivar

import (
	"bytes"
	"encoding"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"

	"github.com/abboot/abboot/pkg/guid"
)

// partUUID is the partition GUID of the ESP the efibootmgr vectors were
// recorded with (sgdisk -u1:...).
var partUUID = guid.MustParse("1b2c3d4e-0000-4000-8000-123456789abc")

// espPath is what efibootmgr -c -d DISK -p 1 -l '\EFI\abboot\a.efi' builds
// for a GPT partition 1 at LBA 0x800 of 0xf000 sectors.
var espPath = DevicePath{
	HardDrive{PartitionNumber: 1, PartitionStart: 0x800, PartitionSize: 0xf000, Signature: partUUID, MBRType: MBRTypeGPT, SignatureType: SignatureTypeGPT},
	FilePath{Path: `\EFI\abboot\a.efi`},
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Nodes as UEFI 2.10 §10.3 lays them out: type, sub-type, 16-bit length.
const (
	hdNodeHex = "04012a00" + "01000000" + "0008000000000000" + "00f0000000000000" +
		"4e3d2c1b000000408000123456789abc" + "02" + "02"
	fileNodeHex = "04042800" + "5c004500460049005c006100620062006f006f0074005c0061002e00650066006900" + "0000"
	endHex      = "7fff0400"
	// OVMF's built-in UiApp entry: Fv(7cb8bdc9-...)/FvFile(462caa21-...).
	fvHex     = "04071400" + "c9bdb87cebf8344faaea3ee4af6516a1"
	fvFileHex = "04061400" + "21aa2c4614760345836e8ab6f4662331"
	// PciRoot(0x0)/Pci(0x1,0x1): an ACPI node and a hardware node.
	acpiHex = "02010c00" + "d041030a" + "00000000"
	pciHex  = "01010600" + "0101"
)

func TestDevicePathRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want DevicePath
		str  string
	}{
		{
			name: "efibootmgr HD/File",
			in:   hdNodeHex + fileNodeHex + endHex,
			want: espPath,
			str:  `HD(1,GPT,1b2c3d4e-0000-4000-8000-123456789abc,0x800,0xf000)/File(\EFI\abboot\a.efi)`,
		},
		{
			name: "OVMF firmware volume file kept raw",
			in:   fvHex + fvFileHex + endHex,
			want: DevicePath{
				Raw{Type: 4, SubType: 7, Data: mustHex(t, "c9bdb87cebf8344faaea3ee4af6516a1")},
				Raw{Type: 4, SubType: 6, Data: mustHex(t, "21aa2c4614760345836e8ab6f4662331")},
			},
			str: "Path(4,7,c9bdb87cebf8344faaea3ee4af6516a1)/Path(4,6,21aa2c4614760345836e8ab6f4662331)",
		},
		{
			name: "PCI path then HD",
			in:   acpiHex + pciHex + hdNodeHex + endHex,
			want: DevicePath{
				Raw{Type: 2, SubType: 1, Data: mustHex(t, "d041030a00000000")},
				Raw{Type: 1, SubType: 1, Data: []byte{1, 1}},
				espPath[0],
			},
		},
		{
			name: "two instances: inner End kept raw",
			in:   hdNodeHex + fileNodeHex + endHex + pciHex + endHex,
			want: DevicePath{espPath[0], espPath[1], Raw{Type: 0x7f, SubType: 0xff}, Raw{Type: 1, SubType: 1, Data: []byte{1, 1}}},
		},
		{
			name: "two End nodes",
			in:   fileNodeHex + endHex + endHex,
			want: DevicePath{espPath[1], Raw{Type: 0x7f, SubType: 0xff}, Raw{Type: 0x7f, SubType: 0xff}},
		},
		{
			name: "HardDrive of the wrong size kept raw",
			in:   "04010800" + "01000000" + endHex,
			want: DevicePath{Raw{Type: 4, SubType: 1, Data: []byte{1, 0, 0, 0}}},
		},
		{
			name: "MBR partition",
			in:   "04012a00" + "02000000" + "3f00000000000000" + "0010000000000000" + "78563412000000000000000000000000" + "01" + "01" + endHex,
			want: DevicePath{HardDrive{PartitionNumber: 2, PartitionStart: 0x3f, PartitionSize: 0x1000, Signature: guid.GUID{0x78, 0x56, 0x34, 0x12}, MBRType: 1, SignatureType: SignatureTypeMBR}},
			str:  "HD(2,MBR,0x12345678,0x3f,0x1000)",
		},
		{
			name: "only End",
			in:   endHex,
			want: DevicePath{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := mustHex(t, tc.in)
			p, err := ParseDevicePath(in)
			if err != nil {
				t.Fatalf("ParseDevicePath: %v", err)
			}
			if !reflect.DeepEqual(p, tc.want) {
				t.Errorf("ParseDevicePath = %#v, want %#v", p, tc.want)
			}
			out, err := p.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			if !bytes.Equal(out, in) {
				t.Errorf("MarshalBinary = %x, want %x", out, in)
			}
			if tc.str != "" && p.String() != tc.str {
				t.Errorf("String = %s, want %s", p, tc.str)
			}
		})
	}
}

func TestParseDevicePathErrors(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"short header", "7fff04"},
		{"node length below 4", "04010300" + endHex},
		{"node length past end", "04042a00" + "41000000"},
		{"node length past end after a good node", hdNodeHex + "7fff0800"},
		{"End with data", fileNodeHex + "7fff0500" + "aa"},
		{"End with data before End", fileNodeHex + "7fff0600" + "3030" + endHex},
		{"file path odd length", "04040700" + "410000" + endHex},
		{"file path without NUL", "04040800" + "41004200" + endHex},
		{"file path empty", "04040400" + endHex},
		{"file path with inner NUL", "04040a00" + "410000000000" + endHex},
		{"file path lone high surrogate", "04040800" + "00d80000" + endHex},
		{"file path lone low surrogate", "04040a00" + "00dc41000000" + endHex},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseDevicePath(mustHex(t, tc.in))
			if err == nil {
				t.Fatalf("ParseDevicePath(%s) = %v, want error", tc.in, p)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
		})
	}
}

func TestMarshalDevicePathErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    DevicePath
	}{
		{"NUL in file path", DevicePath{FilePath{Path: "a\x00b"}}},
		{"invalid UTF-8", DevicePath{FilePath{Path: "\xff"}}},
		{"node too long", DevicePath{Raw{Type: 1, SubType: 1, Data: make([]byte, 0xfffc)}}},
		{"nil node", DevicePath{nil}},
		{"End with data", DevicePath{Raw{Type: 0x7f, SubType: 0xff, Data: []byte{1}}}},
	} {
		if b, err := tc.p.MarshalBinary(); err == nil {
			t.Errorf("%s: MarshalBinary = %x, want error", tc.name, b)
		}
	}
}

func TestDevicePathAccessors(t *testing.T) {
	second := DevicePath{Raw{Type: 0x7f, SubType: 0xff}, FilePath{Path: `\other.efi`}}
	for _, tc := range []struct {
		name   string
		p      DevicePath
		file   string
		hasHD  bool
		hdPart uint32
	}{
		{"HD and file", espPath, `\EFI\abboot\a.efi`, true, 1},
		{"pointer nodes", DevicePath{&HardDrive{PartitionNumber: 3}, &FilePath{Path: `\x.efi`}}, `\x.efi`, true, 3},
		{"only raw", DevicePath{Raw{Type: 1, SubType: 1}}, "", false, 0},
		{"file only in second instance", second, "", false, 0},
		{"first instance wins", append(DevicePath{FilePath{Path: `\first.efi`}}, second...), `\first.efi`, false, 0},
	} {
		f, ok := tc.p.File()
		if f != tc.file || ok != (tc.file != "") {
			t.Errorf("%s: File() = %q, %v; want %q", tc.name, f, ok, tc.file)
		}
		hd, ok := tc.p.HardDrive()
		if ok != tc.hasHD || (ok && hd.PartitionNumber != tc.hdPart) {
			t.Errorf("%s: HardDrive() = %+v, %v; want partition %d, %v", tc.name, hd, ok, tc.hdPart, tc.hasHD)
		}
	}
	// The returned HardDrive is a copy.
	hd, _ := espPath.HardDrive()
	hd.PartitionNumber = 9
	if h, _ := espPath.HardDrive(); h.PartitionNumber != 1 {
		t.Errorf("HardDrive() returned an alias into the path")
	}
}

func TestMarshalAppendsEnd(t *testing.T) {
	for _, p := range []DevicePath{nil, {FilePath{Path: `\a`}}, {FilePath{Path: `\a`}, Raw{Type: 0x7f, SubType: 0xff}}} {
		b, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(b, mustHex(t, endHex)) || bytes.Count(b, mustHex(t, endHex)) != 1 {
			t.Errorf("MarshalBinary(%v) = %x, want exactly one End at the end", p, b)
		}
	}
}

// roundTrip is the core of the parsers' fuzz targets: when b parses, its
// encoding must succeed, and parsing and encoding that again must give the
// same bytes. It returns the parsed value and its encoding, and ok false
// when b does not parse.
func roundTrip[T encoding.BinaryMarshaler](t *testing.T, b []byte, parse func([]byte) (T, error)) (v T, out []byte, ok bool) {
	t.Helper()
	v, err := parse(b)
	if err != nil {
		return v, nil, false
	}
	if out, err = v.MarshalBinary(); err != nil {
		t.Fatalf("parsed %x as %+v but cannot encode it: %v", b, v, err)
	}
	v2, err := parse(out)
	if err != nil {
		t.Fatalf("re-parsing %x (from %x): %v", out, b, err)
	}
	if again, err := v2.MarshalBinary(); err != nil || !bytes.Equal(again, out) {
		t.Fatalf("unstable: %x -> %x -> %x (%v)", b, out, again, err)
	}
	return v, out, true
}

// checkPathIdentity checks that encoding a parsed path gives back its input,
// except that an End node is appended when the input had none.
func checkPathIdentity(t *testing.T, in, out []byte, p DevicePath) {
	t.Helper()
	if bytes.Equal(out, in) {
		return
	}
	appended := bytes.Equal(out, append(bytes.Clone(in), mustHex(t, endHex)...))
	if !appended || (len(p) > 0 && isEndEntire(p[len(p)-1])) {
		t.Fatalf("input %x parsed as %v re-encoded as %x", in, p, out)
	}
}

func FuzzParseDevicePath(f *testing.F) {
	for _, s := range []string{
		hdNodeHex + fileNodeHex + endHex,
		fvHex + fvFileHex + endHex,
		acpiHex + pciHex + hdNodeHex + endHex,
		hdNodeHex + fileNodeHex + endHex + pciHex + endHex,
		fileNodeHex, "04040800" + "00d80000" + endHex, "04010300",
	} {
		f.Add(mustHex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, out, ok := roundTrip(t, b, ParseDevicePath); ok {
			checkPathIdentity(t, b, out, p)
		}
	})
}
