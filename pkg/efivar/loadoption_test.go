package efivar

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/foxboron/go-uefi/efi/device"
)

// efibootmgrBoot0000 is Boot0000 (without the attributes word) as
// efibootmgr 17 wrote it for
//
//	efibootmgr -c -d /dev/loop0 -p 1 -L abboot-a -l '\EFI\abboot\a.efi'
//
// on a GPT disk whose partition 1 (1b2c3d4e-0000-4000-8000-123456789abc)
// starts at LBA 0x800 and is 0xf000 sectors long. TestEfibootmgrCreate
// re-records it when efibootmgr and a loop device are available.
const efibootmgrBoot0000 = "0100000056006100620062006f006f0074002d006100000004012a0001000000000800000000000000f00000000000004e3d2c1b000000408000123456789abc0202040428005c004500460049005c006100620062006f006f0074005c0061002e0065006600690000007fff0400"

var abbootA = &LoadOption{
	Attributes:  LoadOptionActive,
	Description: "abboot-a",
	FilePath:    espPath,
}

// TestLoadOptionGolden builds the efibootmgr bytes by hand from UEFI 2.10
// §3.1.3 and checks both against the codec.
func TestLoadOptionGolden(t *testing.T) {
	var spec []byte
	spec = binary.LittleEndian.AppendUint32(spec, LoadOptionActive) // Attributes
	spec = binary.LittleEndian.AppendUint16(spec, 42+40+4)          // FilePathListLength: HD, File, End
	for _, c := range "abboot-a\x00" {                              // Description, CHAR16, NUL-terminated
		spec = binary.LittleEndian.AppendUint16(spec, uint16(c))
	}
	spec = append(spec, mustHex(t, hdNodeHex+fileNodeHex+endHex)...)

	golden := mustHex(t, efibootmgrBoot0000)
	if !bytes.Equal(spec, golden) {
		t.Fatalf("hand-built bytes\n%x\ndiffer from efibootmgr's\n%x", spec, golden)
	}
	got, err := abbootA.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, golden) {
		t.Errorf("MarshalBinary =\n%x\nwant\n%x", got, golden)
	}
	o, err := ParseLoadOption(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o, abbootA) {
		t.Errorf("ParseLoadOption = %+v, want %+v", o, abbootA)
	}
}

// TestGoUEFIParser checks our encoding against go-uefi's own load option
// parser where the two overlap (it has no encoder and drops optional data).
func TestGoUEFIParser(t *testing.T) {
	b, err := abbootA.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var lo device.EFILoadOption
	if err := lo.Unmarshal(bytes.NewBuffer(b)); err != nil {
		t.Fatalf("go-uefi cannot parse our load option: %v", err)
	}
	if lo.Attributes != LoadOptionActive || lo.Description != abbootA.Description || int(lo.FilePathListLength) != 86 {
		t.Errorf("go-uefi read attributes %#x, description %q, FilePathListLength %d", lo.Attributes, lo.Description, lo.FilePathListLength)
	}
	if len(lo.FilePath) != 2 {
		t.Fatalf("go-uefi read %d nodes, want 2: %#v", len(lo.FilePath), lo.FilePath)
	}
	hd, ok := lo.FilePath[0].(device.HardDriveMediaDevicePath)
	if !ok {
		t.Fatalf("go-uefi node 0 is %T", lo.FilePath[0])
	}
	want := espPath[0].(HardDrive)
	if hd.PartitionNumber != want.PartitionNumber ||
		binary.LittleEndian.Uint64(hd.PartitionStart[:]) != want.PartitionStart ||
		binary.LittleEndian.Uint64(hd.PartitionSize[:]) != want.PartitionSize ||
		hd.PartitionSignature != want.Signature || hd.PartitionFormat != want.MBRType || hd.SignatureType != want.SignatureType {
		t.Errorf("go-uefi read HD node %+v, want %+v", hd, want)
	}
	if f, ok := lo.FilePath[1].(device.FileTypeMediaDevicePath); !ok || f.PathName != `\EFI\abboot\a.efi` {
		t.Errorf("go-uefi read file node %#v", lo.FilePath[1])
	}
}

func TestLoadOptionRoundTrip(t *testing.T) {
	for _, o := range []*LoadOption{
		{Attributes: LoadOptionActive, Description: "abboot-b", FilePath: espPath, OptionalData: []byte("abboot.handover=b")},
		{Attributes: 0x109, Description: "UiApp", FilePath: DevicePath{Raw{Type: 4, SubType: 7, Data: make([]byte, 16)}, Raw{Type: 4, SubType: 6, Data: make([]byte, 16)}}},
		{Description: "non-BMP \U0001F680 and é", FilePath: DevicePath{FilePath{Path: `\ü.efi`}}},
		{Description: "", FilePath: DevicePath{espPath[0], Raw{Type: 0x7f, SubType: 0xff}, espPath[1]}},
	} {
		b, err := o.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary(%+v): %v", o, err)
		}
		got, err := ParseLoadOption(b)
		if err != nil {
			t.Fatalf("ParseLoadOption(%x): %v", b, err)
		}
		if !reflect.DeepEqual(got, o) {
			t.Errorf("round trip of %+v = %+v", o, got)
		}
	}
}

func TestParseLoadOptionErrors(t *testing.T) {
	path := hdNodeHex + fileNodeHex + endHex
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"shorter than the header", "0100000056"},
		{"no description NUL", "010000005600" + "41004200"},
		{"odd byte after description", "010000005600" + "410042"},
		{"FilePathListLength past the end", "010000005700" + "41000000" + path},
		{"FilePathListLength zero", "010000000000" + "41000000" + path},
		{"description lone surrogate", "010000005600" + "00d80000" + path},
		{"malformed node inside", "010000000800" + "41000000" + "04040800" + "41004200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseLoadOption(mustHex(t, tc.in))
			if err == nil {
				t.Fatalf("ParseLoadOption = %+v, want error", o)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
		})
	}
}

func TestMarshalLoadOptionErrors(t *testing.T) {
	for _, o := range []*LoadOption{
		{Description: "a\x00b", FilePath: espPath},
		{Description: "ok", FilePath: DevicePath{FilePath{Path: "\x00"}}},
		{Description: "ok", FilePath: DevicePath{Raw{Type: 1, Data: make([]byte, 0x8000)}, Raw{Type: 1, Data: make([]byte, 0x8000)}}},
	} {
		if b, err := o.MarshalBinary(); err == nil {
			t.Errorf("MarshalBinary(%.40q) = %d bytes, want error", o.Description, len(b))
		}
	}
}

func FuzzParseLoadOption(f *testing.F) {
	f.Add(mustHex(f, efibootmgrBoot0000))
	f.Add(mustHex(f, "010000005a00"+"41000000"+hdNodeHex+fileNodeHex+endHex+pciHex+"61626364"))
	f.Add(mustHex(f, "010000005700"+"41000000"+hdNodeHex))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, out, ok := roundTrip(t, b, ParseLoadOption)
		if !ok {
			return
		}
		// The input's FilePathList must come back unchanged, or with an
		// End node appended when it had none; everything else verbatim.
		desc, _ := encodeUTF16Z(o.Description)
		head := 6 + len(desc)
		pathIn := b[head : head+int(binary.LittleEndian.Uint16(b[4:]))]
		pathOut, _ := o.FilePath.MarshalBinary()
		checkPathIdentity(t, pathIn, pathOut, o.FilePath)
		want := append(append(append([]byte(nil), b[:4]...), byte(len(pathOut)), byte(len(pathOut)>>8)), b[6:head]...)
		want = append(append(want, pathOut...), b[head+len(pathIn):]...)
		if !bytes.Equal(out, want) {
			t.Fatalf("input %x re-encoded as %x, want %x", b, out, want)
		}
	})
}
