package verity

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
)

// golden is the superblock `veritysetup format --salt 00112233 --uuid
// 12345678-1234-5678-9abc-def012345678` wrote for one 4096-byte block
// (cryptsetup 2.6.1), up to the end of the salt; the rest is zero.
func golden(t testing.TB) []byte {
	h := "7665726974790000" + "01000000" + "01000000" +
		"12345678123456789abcdef012345678" +
		"7368613235360000000000000000000000000000000000000000000000000000" +
		"00100000" + "00100000" + "0100000000000000" + "0400" + "000000000000" + "00112233"
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, make([]byte, SuperblockSize-len(b))...)
}

func TestSuperblockGolden(t *testing.T) {
	b := golden(t)
	sb, err := ReadSuperblock(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if sb.UUID.String() != "12345678-1234-5678-9abc-def012345678" || sb.HashType != 1 || sb.Algorithm != "sha256" ||
		sb.DataBlockSize != 4096 || sb.HashBlockSize != 4096 || sb.DataBlocks != 1 || !bytes.Equal(sb.Salt, []byte{0, 0x11, 0x22, 0x33}) {
		t.Errorf("parsed %+v", sb)
	}
	m, err := sb.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m, b) {
		t.Errorf("MarshalBinary =\n%x\nwant\n%x", m, b)
	}
}

func TestReadSuperblockErrors(t *testing.T) {
	le := binary.LittleEndian
	for _, tc := range []struct {
		name string
		edit func(b []byte) []byte
		want string
	}{
		{"short", func(b []byte) []byte { return b[:511] }, "shorter than 512"},
		{"signature", func(b []byte) []byte { b[0] = 'V'; return b }, "no verity superblock"},
		{"version", func(b []byte) []byte { le.PutUint32(b[8:], 2); return b }, "version 2"},
		{"hash type", func(b []byte) []byte { le.PutUint32(b[12:], 2); return b }, "hash type 2"},
		{"algorithm not terminated", func(b []byte) []byte { copy(b[32:64], strings.Repeat("a", 32)); return b }, "NUL-terminated"},
		{"data block size", func(b []byte) []byte { le.PutUint32(b[64:], 4095); return b }, "block size 4095"},
		{"hash block size", func(b []byte) []byte { le.PutUint32(b[68:], 1<<20); return b }, "block size 1048576"},
		{"no data blocks", func(b []byte) []byte { le.PutUint64(b[72:], 0); return b }, "0 data blocks"},
		{"too many data blocks", func(b []byte) []byte { le.PutUint64(b[72:], 1<<52); return b }, "out of range"},
		{"salt size", func(b []byte) []byte { le.PutUint16(b[80:], 257); return b }, "salt size 257"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadSuperblock(bytes.NewReader(tc.edit(golden(t))))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ReadSuperblock = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestMarshalErrors(t *testing.T) {
	for _, sb := range []Superblock{
		{Algorithm: "sha256", Salt: make([]byte, 257)},
		{Algorithm: strings.Repeat("a", 32)},
		{Algorithm: "sha\x00256"},
	} {
		if _, err := sb.MarshalBinary(); err == nil {
			t.Errorf("MarshalBinary(%+v) succeeded", sb)
		}
	}
}

// FuzzReadSuperblock: any input either fails cleanly or parses to a
// superblock that survives MarshalBinary and ReadSuperblock unchanged, and
// whose encoding agrees with the input on every field (only padding and
// the bytes after the algorithm's NUL may differ).
func FuzzReadSuperblock(f *testing.F) {
	f.Add(golden(f))
	f.Add(make([]byte, SuperblockSize))
	g := golden(f)
	binary.LittleEndian.PutUint16(g[80:], 256)
	f.Add(g)
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := ReadSuperblock(bytes.NewReader(b))
		if err != nil {
			return
		}
		m, err := sb.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary of a parsed superblock: %v", err)
		}
		sb2, err := ReadSuperblock(bytes.NewReader(m))
		if err != nil || !reflect.DeepEqual(sb, sb2) {
			t.Fatalf("round trip: %+v, %v; want %+v", sb2, err, sb)
		}
		n := len(sb.Algorithm)
		saltEnd := 88 + len(sb.Salt)
		for _, r := range [][2]int{{0, 32 + n + 1}, {64, 82}, {88, saltEnd}} {
			if !bytes.Equal(m[r[0]:r[1]], b[r[0]:r[1]]) {
				t.Fatalf("bytes %d..%d: encoded % x, input % x", r[0], r[1], m[r[0]:r[1]], b[r[0]:r[1]])
			}
		}
	})
}
