package verity

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/abboot/abboot/internal/testutil"
)

// randomData returns n blocks of bs pseudo-random bytes, the same for the
// same arguments.
func randomData(n, bs int) []byte {
	b := make([]byte, n*bs)
	r := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(bs >> 9)})
	r.Read(b)
	return b
}

func TestGeometry(t *testing.T) {
	const k = 4096
	for _, tc := range []struct {
		name   string
		blocks int64
		p      Params
		levels []level // levels[0] hashes the data
		size   int64
	}{
		{"1 block: no tree", 1, Params{}, []level{}, k},
		{"1 block, no superblock", 1, Params{NoSuperblock: true}, []level{}, 0},
		{"2 blocks", 2, Params{}, []level{{k, 1}}, 2 * k},
		{"127 blocks", 127, Params{}, []level{{k, 1}}, 2 * k},
		{"128 blocks fill one hash block", 128, Params{}, []level{{k, 1}}, 2 * k},
		{"129 blocks need a second level", 129, Params{}, []level{{2 * k, 2}, {k, 1}}, 4 * k},
		{"129 blocks, no superblock", 129, Params{NoSuperblock: true}, []level{{k, 2}, {0, 1}}, 3 * k},
		{"128*128 blocks", 128 * 128, Params{}, []level{{2 * k, 128}, {k, 1}}, 130 * k},
		{"128*128+1 blocks: three levels", 128*128 + 1, Params{}, []level{{4 * k, 129}, {2 * k, 2}, {k, 1}}, 133 * k},
		// 512-byte hash blocks hold 16 digests: 1024 -> 64 -> 4 -> 1.
		{"512-byte hash blocks", 1024, Params{HashBlockSize: 512}, []level{{6 * 512, 64}, {2 * 512, 4}, {512, 1}}, 70 * 512},
		{"1 GiB", 1 << 18, Params{}, []level{{18 * k, 2048}, {2 * k, 16}, {k, 1}}, (1 + 1 + 16 + 2048) * k},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dbs := int64(DefaultBlockSize)
			g, err := newGeometry(tc.blocks*dbs, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(g.levels, tc.levels) || g.size != tc.size || g.dataBlocks != tc.blocks {
				t.Errorf("levels %v size %d blocks %d, want %v %d %d", g.levels, g.size, g.dataBlocks, tc.levels, tc.size, tc.blocks)
			}
			if got, err := TreeSize(tc.blocks*dbs, tc.p); err != nil || got != tc.size {
				t.Errorf("TreeSize = %d, %v; want %d", got, err, tc.size)
			}
			// The tree starts where the superblock's block ends.
			if len(tc.levels) > 0 && tc.levels[len(tc.levels)-1].offset != HashOffset(tc.p) {
				t.Errorf("HashOffset = %d, top level at %d", HashOffset(tc.p), tc.levels[len(tc.levels)-1].offset)
			}
		})
	}
}

func TestGeometryErrors(t *testing.T) {
	for _, tc := range []struct {
		size int64
		p    Params
		want string
	}{
		{0, Params{}, "not a positive multiple"},
		{4097, Params{}, "not a positive multiple"},
		{-4096, Params{}, "not a positive multiple"},
		{4096, Params{DataBlockSize: 256}, "block size 256"},
		{4096, Params{HashBlockSize: 3000}, "block size 3000"},
		{1 << 20, Params{DataBlockSize: 1 << 20}, "block size 1048576"},
		{4096, Params{Salt: make([]byte, 257)}, "salt of 257 bytes"},
	} {
		if _, err := TreeSize(tc.size, tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("TreeSize(%d, %+v) = %v, want error containing %q", tc.size, tc.p, err, tc.want)
		}
		// Format refuses before writing anything.
		h := &testutil.MemFile{}
		if _, err := Format(bytes.NewReader(make([]byte, max(tc.size, 0))), tc.size, h, tc.p); err == nil || len(h.B) != 0 {
			t.Errorf("Format(%d, %+v) = %v and wrote %d bytes, want an error and nothing written", tc.size, tc.p, err, len(h.B))
		}
	}
}

// TestRootByHand checks the root of a two-block image against the
// definition: sha256(salt || hash block holding both digests, zero padded).
func TestRootByHand(t *testing.T) {
	data := randomData(2, 4096)
	salt := []byte{1, 2, 3}
	sum := func(b []byte) []byte { s := sha256.Sum256(append(slices.Clone(salt), b...)); return s[:] }
	hb := make([]byte, 4096)
	copy(hb, sum(data[:4096]))
	copy(hb[32:], sum(data[4096:]))
	h := &testutil.MemFile{}
	root, err := Format(bytes.NewReader(data), int64(len(data)), h, Params{Salt: salt, NoSuperblock: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.B, hb) {
		t.Errorf("hash device differs from the hand-built hash block")
	}
	if want := sum(hb); !bytes.Equal(root, want) {
		t.Errorf("root %x, want %x", root, want)
	}
}

// TestVerifyNamesFirstBadBlock corrupts blocks in several runs and
// levels and checks that Verify names the one the tree points to first.
func TestVerifyNamesFirstBadBlock(t *testing.T) {
	const n, bs = 1100, 4096 // nine 512 KiB runs on level 0, two levels
	data := randomData(n, bs)
	p := Params{Salt: []byte("salt"), NoSuperblock: true}
	h := &testutil.MemFile{}
	root, err := Format(bytes.NewReader(data), int64(len(data)), h, p)
	if err != nil {
		t.Fatal(err)
	}
	g, err := newGeometry(int64(len(data)), p)
	if err != nil {
		t.Fatal(err)
	}
	l0, l1 := g.levels[0], g.levels[1]
	lastL0 := l0.offset + (l0.blocks-1)*bs
	for _, tc := range []struct {
		name        string
		dataOffsets []int64
		hashOffsets []int64
		resign      bool // recompute the last level-0 block's parents, as a forger would
		want        MismatchError
	}{
		{"one data block", []int64{700*bs + 5}, nil, false, MismatchError{Device: "data", Block: 700, Offset: 700 * bs}},
		{"lowest of several runs", []int64{900 * bs, 300*bs + 4095, 1099 * bs}, nil, false, MismatchError{Device: "data", Block: 300, Offset: 300 * bs}},
		{"hash block beats data", []int64{10 * bs}, []int64{l0.offset + 3*bs + 7}, false, MismatchError{Device: "hash", Level: 0, Block: l0.offset/bs + 3, Offset: l0.offset + 3*bs}},
		{"top block", nil, []int64{l1.offset + 100, l0.offset}, false, MismatchError{Device: "hash", Level: 1, Block: l1.offset / bs, Offset: l1.offset, Root: true}},
		{"padding", nil, []int64{lastL0 + bs - 1}, false, MismatchError{Device: "hash", Level: 0, Block: lastL0 / bs, Offset: lastL0}},
		{"padding under a forged parent", nil, []int64{lastL0 + bs - 1}, true, MismatchError{Device: "hash", Level: 0, Block: lastL0 / bs, Offset: lastL0, Padding: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, hh := slices.Clone(data), slices.Clone(h.B)
			for _, o := range tc.dataOffsets {
				d[o] ^= 0x80
			}
			for _, o := range tc.hashOffsets {
				hh[o] ^= 0x01
			}
			r := root
			if tc.resign {
				sum := func(b []byte) []byte { s := sha256.Sum256(append(slices.Clone(p.Salt), b...)); return s[:] }
				copy(hh[l1.offset+(l0.blocks-1)*32:], sum(hh[lastL0:lastL0+bs]))
				r = sum(hh[l1.offset : l1.offset+bs])
			}
			err := Verify(bytes.NewReader(d), int64(len(d)), bytes.NewReader(hh), r, p)
			var me *MismatchError
			if !errors.As(err, &me) || *me != tc.want {
				t.Errorf("Verify = %v, want %v", err, &tc.want)
			}
		})
	}
	if err := Verify(bytes.NewReader(data), int64(len(data)), bytes.NewReader(h.B), root, p); err != nil {
		t.Errorf("Verify of the intact tree: %v", err)
	}
}

// TestVerifyOneBlock covers the tree-less case, where the root hash covers
// the data block itself.
func TestVerifyOneBlock(t *testing.T) {
	data := randomData(1, 4096)
	h := &testutil.MemFile{}
	root, err := Format(bytes.NewReader(data), 4096, h, Params{Salt: []byte{9}})
	if err != nil {
		t.Fatal(err)
	}
	data[0] ^= 1
	want := MismatchError{Device: "data", Root: true}
	var me *MismatchError
	if err := Verify(bytes.NewReader(data), 4096, h, root, Params{}); !errors.As(err, &me) || *me != want {
		t.Errorf("Verify = %v, want %v", err, &want)
	}
}

func TestVerifyErrors(t *testing.T) {
	data := randomData(4, 4096)
	h := &testutil.MemFile{}
	root, err := Format(bytes.NewReader(data), int64(len(data)), h, Params{Salt: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		size int64
		hash []byte
		root []byte
		want string
	}{
		{"data shorter than the superblock says", 3 * 4096, h.B, root, "superblock covers 16384"},
		{"no superblock", 4 * 4096, make([]byte, 8192), root, "no verity superblock"},
		{"truncated tree", 4 * 4096, h.B[:4096], root, "short read"},
		{"short root hash", 4 * 4096, h.B, root[:31], "root hash is 31 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(bytes.NewReader(data), tc.size, bytes.NewReader(tc.hash), tc.root, Params{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Verify = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// failingReader fails reads from one offset on.
type failingReader struct {
	r   io.ReaderAt
	bad int64
}

var errDisk = errors.New("input/output error")

func (f failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.bad {
		return 0, errDisk
	}
	return f.r.ReadAt(p, off)
}

func TestFormatReadError(t *testing.T) {
	data := randomData(600, 4096)
	_, err := Format(failingReader{bytes.NewReader(data), 400 * 4096}, int64(len(data)), &testutil.MemFile{}, Params{})
	if !errors.Is(err, errDisk) {
		t.Errorf("Format = %v, want the read error", err)
	}
}

// TestFormatFile builds the same tree into an *os.File and into memory.
func TestFormatFile(t *testing.T) {
	data := randomData(300, 4096)
	p := Params{Salt: []byte("s"), UUID: [16]byte{1}}
	f, err := os.Create(filepath.Join(t.TempDir(), "hash"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r1, err := Format(bytes.NewReader(data), int64(len(data)), f, p)
	if err != nil {
		t.Fatal(err)
	}
	m := &testutil.MemFile{}
	r2, err := Format(bytes.NewReader(data), int64(len(data)), m, p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r1, r2) || !bytes.Equal(got, m.B) {
		t.Errorf("file and memory trees differ")
	}
}

// TestCheckRoot: the one-block check accepts the right root hash and
// refuses another image's, but does not read the data (a corrupted data
// block is dm-verity's to find).
func TestCheckRoot(t *testing.T) {
	const n, bs = 300, 4096
	data := randomData(n, bs)
	p := Params{Salt: []byte("salt")}
	h := &testutil.MemFile{}
	root, err := Format(bytes.NewReader(data), int64(len(data)), h, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckRoot(bytes.NewReader(data), int64(len(data)), h, root); err != nil {
		t.Errorf("CheckRoot with the right hash: %v", err)
	}
	other := bytes.Clone(root)
	other[0] ^= 1
	var me *MismatchError
	if err := CheckRoot(bytes.NewReader(data), int64(len(data)), h, other); !errors.As(err, &me) || !me.Root {
		t.Errorf("CheckRoot with another hash: %v, want a root mismatch", err)
	}
	data[5*bs] ^= 1
	if err := CheckRoot(bytes.NewReader(data), int64(len(data)), h, root); err != nil {
		t.Errorf("CheckRoot read the data: %v", err)
	}
}
