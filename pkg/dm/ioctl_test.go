package dm

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// littleEndian skips tests whose golden bytes are written out by hand in
// x86-64 byte order; the structures are in the host's.
func littleEndian(t testing.TB) {
	if ne.Uint16([]byte{1, 0}) != 1 {
		t.Skip("golden bytes are little-endian")
	}
}

func TestLayoutMatchesXSys(t *testing.T) {
	// x/sys/unix generates its sizes from the kernel header with cgo
	// -godefs, an independent source for ours.
	if headerSize != unix.SizeofDmIoctl || specSize != unix.SizeofDmTargetSpec {
		t.Errorf("sizes %d, %d; x/sys/unix says %d, %d", headerSize, specSize, unix.SizeofDmIoctl, unix.SizeofDmTargetSpec)
	}
	if nameLen != unix.DM_NAME_LEN || uuidLen != unix.DM_UUID_LEN || typeLen != unix.DM_MAX_TYPE_NAME {
		t.Errorf("name lengths %d %d %d disagree with x/sys/unix", nameLen, uuidLen, typeLen)
	}
}

// TestEncodeTableLoad pins a DM_TABLE_LOAD request with two targets, byte
// by byte, as dm-ioctl.h lays it out.
func TestEncodeTableLoad(t *testing.T) {
	littleEndian(t)
	h := header{Name: "abboot-root-a", UUID: "ABBOOT-a", Flags: unix.DM_READONLY_FLAG, Version: [3]uint32{4, 0, 0}}
	targets := []target{
		{Start: 0, Length: 16, Type: "verity", Params: "abc"},          // 3+1 bytes, padded to 8
		{Start: 16, Length: 0x0102, Type: "zero", Params: "123456789"}, // 9+1, padded to 16
	}
	got, err := encode(h, targets, headerSize)
	if err != nil {
		t.Fatal(err)
	}

	want := make([]byte, 312+40+8+40+16) // 416 = 0x1a0
	put := func(off int, b ...byte) { copy(want[off:], b) }
	put(0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0) // version 4.0.0
	put(12, 0xa0, 0x01, 0, 0)                  // data_size 416
	put(16, 0x38, 0x01, 0, 0)                  // data_start 312
	put(20, 2, 0, 0, 0)                        // target_count
	put(28, 1, 0, 0, 0)                        // flags: DM_READONLY_FLAG
	copy(want[48:], "abboot-root-a")           // name[128]
	copy(want[176:], "ABBOOT-a")               // uuid[129]
	// First dm_target_spec at 312.
	put(312+8, 16)                   // length
	put(312+20, 48)                  // next: 40 + 8, from this spec
	copy(want[312+24:], "verity")    // target_type[16]
	copy(want[312+40:], "abc")       // parameters, NUL, padding
	put(360, 16)                     // sector_start
	put(360+8, 0x02, 0x01)           // length 0x102
	put(360+20, 56)                  // next: 40 + 16
	copy(want[360+24:], "zero")      //
	copy(want[360+40:], "123456789") //
	if !bytes.Equal(got, want) {
		t.Errorf("encoded table load:\n% x\nwant:\n% x", got, want)
	}
}

func TestEncodeGrowsToSize(t *testing.T) {
	b, err := encode(header{Name: "x"}, nil, statusBufSize)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != statusBufSize || ne.Uint32(b[12:]) != statusBufSize || ne.Uint32(b[16:]) != headerSize {
		t.Errorf("len %d, data_size %d, data_start %d", len(b), ne.Uint32(b[12:]), ne.Uint32(b[16:]))
	}
}

func TestEncodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		h       header
		targets []target
	}{
		{"long name", header{Name: strings.Repeat("n", 128)}, nil},
		{"NUL in name", header{Name: "a\x00b"}, nil},
		{"long uuid", header{Name: "a", UUID: strings.Repeat("u", 129)}, nil},
		{"long type", header{Name: "a"}, []target{{Type: strings.Repeat("t", 16)}}},
		{"NUL in params", header{Name: "a"}, []target{{Type: "verity", Params: "1\x002"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := encode(tc.h, tc.targets, 0); err == nil {
				t.Error("encode succeeded")
			}
		})
	}
	// The longest names that fit are accepted.
	if _, err := encode(header{Name: strings.Repeat("n", 127), UUID: strings.Repeat("u", 128)}, nil, 0); err != nil {
		t.Error(err)
	}
}

// statusReply builds the reply a kernel writes for DM_TABLE_STATUS, with
// next offsets relative to the payload, by hand.
func statusReply(t testing.TB, h header, targets []target) []byte {
	b, err := encode(h, nil, headerSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range targets {
		spec := make([]byte, specSize)
		ne.PutUint64(spec, tg.Start)
		ne.PutUint64(spec[8:], tg.Length)
		copy(spec[specType:], tg.Type)
		spec = append(spec, tg.Params...)
		spec = append(spec, make([]byte, align8(len(tg.Params)+1)-len(tg.Params))...)
		ne.PutUint32(spec[20:], uint32(len(b)+len(spec)-headerSize))
		b = append(b, spec...)
	}
	ne.PutUint32(b[12:], uint32(len(b)))
	ne.PutUint32(b[20:], uint32(len(targets)))
	return b
}

// TestDecodeStatusReply decodes a reply laid out by hand the way
// dm-ioctl.c's retrieve_status writes it.
func TestDecodeStatusReply(t *testing.T) {
	littleEndian(t)
	b := make([]byte, 312+40+8+40+8+64) // spare room after the data, as in a real buffer
	put := func(off int, v ...byte) { copy(b[off:], v) }
	put(0, 4, 0, 0, 0, 50, 0, 0, 0, 0, 0, 0, 0) // the kernel answers with its version, 4.50.0
	put(12, 0x98, 0x01, 0, 0)                   // data_size 408: header and two targets
	put(16, 0x38, 0x01, 0, 0)                   // data_start 312
	put(20, 2, 0, 0, 0)                         // target_count
	put(24, 1, 0, 0, 0)                         // open_count
	put(28, 0x21, 0, 0, 0)                      // DM_ACTIVE_PRESENT_FLAG | DM_READONLY_FLAG
	put(40, 0x00, 0xfe, 0, 0, 0, 0, 0, 0)       // dev 254:0
	copy(b[48:], "abboot-root-a")
	put(312+8, 0x00, 0x08)     // length 2048
	put(312+20, 48)            // next, from the payload start
	copy(b[312+24:], "verity") //
	copy(b[312+40:], "V -")    //
	put(360, 0x00, 0x08)       // sector_start 2048
	put(360+8, 8)              // length 8
	put(360+20, 96)            // next of the last target, unused
	copy(b[360+24:], "error")  //
	h, err := decodeHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	wantH := header{Version: [3]uint32{4, 50, 0}, DataSize: 408, DataStart: 312, TargetCount: 2, OpenCount: 1,
		Flags: unix.DM_ACTIVE_PRESENT_FLAG | unix.DM_READONLY_FLAG, Dev: unix.Mkdev(254, 0), Name: "abboot-root-a"}
	if !reflect.DeepEqual(h, wantH) {
		t.Errorf("header %+v, want %+v", h, wantH)
	}
	ts, err := decodeTargets(h, b)
	if err != nil {
		t.Fatal(err)
	}
	want := []target{{0, 2048, "verity", "V -"}, {2048, 8, "error", ""}}
	if !reflect.DeepEqual(ts, want) {
		t.Errorf("targets %+v, want %+v", ts, want)
	}
	if got := statusReply(t, h, want); !bytes.Equal(got, b[:408]) {
		t.Errorf("statusReply disagrees with the hand-made reply:\n% x\n% x", got, b[:408])
	}
}

func TestDecodeRefuses(t *testing.T) {
	good := statusReply(t, header{Name: "a"}, []target{{0, 8, "verity", "V"}, {8, 8, "verity", "C"}})
	for _, tc := range []struct {
		name string
		edit func(b []byte) []byte
	}{
		{"short", func(b []byte) []byte { return b[:headerSize-1] }},
		{"data size beyond buffer", func(b []byte) []byte { ne.PutUint32(b[12:], uint32(len(b)+1)); return b }},
		{"data start in header", func(b []byte) []byte { ne.PutUint32(b[16:], headerSize-8); return b }},
		{"data start beyond size", func(b []byte) []byte { ne.PutUint32(b[16:], uint32(len(b)+8)); return b }},
		{"name without NUL", func(b []byte) []byte { copy(b[nameOff:uuidOff], bytes.Repeat([]byte{'x'}, nameLen)); return b }},
		{"uuid without NUL", func(b []byte) []byte { copy(b[uuidOff:uuidOff+uuidLen], bytes.Repeat([]byte{'x'}, uuidLen)); return b }},
		{"too many targets", func(b []byte) []byte { ne.PutUint32(b[20:], 1<<31); return b }},
		{"next points back", func(b []byte) []byte { ne.PutUint32(b[headerSize+20:], 0); return b }},
		{"next beyond data", func(b []byte) []byte { ne.PutUint32(b[headerSize+20:], 1<<30); return b }},
		{"params cut off", func(b []byte) []byte { // the last string's 8 bytes
			b = b[:len(b)-8]
			ne.PutUint32(b[12:], uint32(len(b)))
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(bytes.Clone(good))
			h, err := decodeHeader(b)
			if err == nil {
				_, err = decodeTargets(h, b)
			}
			if err == nil {
				t.Error("decoded a corrupt reply")
			}
		})
	}
}

// FuzzDecode checks that the reply decoder never panics, and that what it
// decodes survives a round trip through a kernel-style reply.
func FuzzDecode(f *testing.F) {
	f.Add(statusReply(f, header{Name: "abboot-root-a"}, []target{{0, 2048, "verity", "V -"}}))
	f.Add(statusReply(f, header{Name: "x", UUID: "u"}, []target{{0, 8, "linear", "7:0 0"}, {8, 8, "zero", ""}}))
	f.Add(statusReply(f, header{Name: "empty"}, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b)
		if err != nil {
			return
		}
		ts, err := decodeTargets(h, b)
		if err != nil {
			return
		}
		if len(ts) != int(h.TargetCount) {
			t.Fatalf("%d targets, header says %d", len(ts), h.TargetCount)
		}
		for _, tg := range ts {
			if strings.ContainsRune(tg.Params, 0) || strings.ContainsRune(tg.Type, 0) || len(tg.Type) >= typeLen {
				t.Fatalf("bad target %+v", tg)
			}
		}
		r := statusReply(t, h, ts)
		h2, err := decodeHeader(r)
		if err != nil {
			t.Fatal(err)
		}
		ts2, err := decodeTargets(h2, r)
		if err != nil {
			t.Fatal(err)
		}
		if h2.Name != h.Name || h2.UUID != h.UUID || h2.Dev != h.Dev || !reflect.DeepEqual(ts, ts2) {
			t.Fatalf("round trip: %+v %+v, then %+v %+v", h, ts, h2, ts2)
		}
	})
}
