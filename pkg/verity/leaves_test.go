package verity

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/abboot/abboot/internal/testutil"
)

// TestReadLeaves reads the leaves of a tree veritysetup made, checked
// against its root hash, and checks that a change anywhere in the tree
// above the leaves, or in the leaves, is refused when a root hash is
// given and ignored when none is.
func TestReadLeaves(t *testing.T) {
	const n = 1100 // three levels with 512-byte hash blocks
	dir := t.TempDir()
	data, hash := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	d := randomData(n, 4096)
	if err := os.WriteFile(data, d, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := veritysetup(t, "format", "--hash-block-size", "512", data, hash)
	if err != nil {
		t.Fatalf("veritysetup format: %v\n%s", err, out)
	}
	root, err := ParseRootHash(rootLine.FindStringSubmatch(out)[1])
	if err != nil {
		t.Fatal(err)
	}
	tree, err := os.ReadFile(hash)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ReadLeaves(bytes.NewReader(tree), int64(len(tree)), root)
	if err != nil {
		t.Fatalf("ReadLeaves: %v", err)
	}
	if l.Blocks() != n || l.BlockSize != 4096 {
		t.Fatalf("ReadLeaves: %d blocks of %d bytes, want %d of 4096", l.Blocks(), l.BlockSize, n)
	}
	for i := range int64(n) {
		b := d[i*4096 : (i+1)*4096]
		if !l.Check(i, b) {
			t.Fatalf("block %d does not match its leaf", i)
		}
		if i > 0 && l.Check(i-1, b) {
			t.Fatalf("block %d matches the leaf of block %d", i, i-1)
		}
	}
	g, err := newGeometry(int64(len(d)), Params{HashBlockSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		off  int64
	}{
		{"leaf", g.levels[0].offset + 100},
		{"last leaf block's padding", g.levels[0].offset + g.levels[0].blocks*512 - 1},
		{"level 1", g.levels[1].offset + 7},
		{"top", g.levels[len(g.levels)-1].offset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Clone(tree)
			bad[tc.off] ^= 1
			if _, err := ReadLeaves(bytes.NewReader(bad), int64(len(bad)), root); err == nil {
				t.Errorf("ReadLeaves with byte %d changed succeeded", tc.off)
			}
			if _, err := ReadLeaves(bytes.NewReader(bad), int64(len(bad)), nil); err != nil {
				t.Errorf("ReadLeaves without a root hash: %v", err)
			}
		})
	}
	root[31] ^= 1
	if _, err := ReadLeaves(bytes.NewReader(tree), int64(len(tree)), root); err == nil {
		t.Errorf("ReadLeaves with a wrong root hash succeeded")
	}
}

func TestReadLeavesOneBlock(t *testing.T) {
	h := &testutil.MemFile{}
	d := randomData(1, 4096)
	root, err := Format(bytes.NewReader(d), int64(len(d)), h, Params{Salt: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadLeaves(bytes.NewReader(h.B), int64(len(h.B)), root); err == nil {
		t.Errorf("ReadLeaves of a one-block tree succeeded")
	}
}

// TestReadTop checks a tree's upper levels without its leaves, and then
// each leaf block on its own.
func TestReadTop(t *testing.T) {
	const n = 1100
	d := randomData(n, 4096)
	h := &testutil.MemFile{}
	root, err := Format(bytes.NewReader(d), int64(len(d)), h, Params{HashBlockSize: 512, Salt: []byte("salt")})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ReadLeaves(bytes.NewReader(h.B), int64(len(h.B)), root)
	if err != nil {
		t.Fatal(err)
	}
	off, size, hbs := int64(0), int64(0), int64(0)
	{
		// Only the upper levels: the leaves zeroed.
		noLeaves := bytes.Clone(h.B)
		g, _ := newGeometry(int64(len(d)), Params{HashBlockSize: 512})
		clear(noLeaves[g.levels[0].offset:])
		top, err := ReadTop(bytes.NewReader(noLeaves), int64(len(noLeaves)), root)
		if err != nil {
			t.Fatalf("ReadTop: %v", err)
		}
		off, size, hbs = top.Leaves()
		if off != g.levels[0].offset || size != int64(len(h.B))-off || hbs != 512 {
			t.Fatalf("Leaves() = %d, %d, %d", off, size, hbs)
		}
		if !bytes.Equal(top.Upper(), h.B[:off]) {
			t.Fatal("Upper() is not the tree up to the leaves")
		}
		for k := range size / hbs {
			b := l.LeafBlock(k)
			if !bytes.Equal(b, h.B[off+k*hbs:off+(k+1)*hbs]) {
				t.Fatalf("LeafBlock(%d) is not the stored block", k)
			}
			if !top.CheckLeafBlock(k, b) {
				t.Fatalf("leaf block %d does not check", k)
			}
			b[hbs-1] ^= 1 // the last block's padding included
			if top.CheckLeafBlock(k, b) {
				t.Fatalf("changed leaf block %d checks", k)
			}
		}
	}
	for _, at := range []int64{0, 600, off - 1} {
		bad := bytes.Clone(h.B)
		bad[at] ^= 1
		if _, err := ReadTop(bytes.NewReader(bad), int64(len(bad)), root); err == nil {
			t.Errorf("ReadTop with byte %d changed succeeded", at)
		}
	}
}

// FuzzReadTree feeds arbitrary hash devices to ReadLeaves and ReadTop:
// a superblock may claim any geometry, and neither may allocate or read
// more than the device holds, nor panic.
func FuzzReadTree(f *testing.F) {
	d := randomData(300, 4096)
	h := &testutil.MemFile{}
	root, err := Format(bytes.NewReader(d), int64(len(d)), h, Params{HashBlockSize: 512, Salt: []byte("s")})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(h.B, root)
	f.Add(h.B[:4096], root)
	f.Fuzz(func(t *testing.T, b, root []byte) {
		size := int64(len(b))
		if l, err := ReadLeaves(bytes.NewReader(b), size, nil); err == nil && int64(len(l.Digests)) > size {
			t.Fatalf("%d bytes of leaves from %d bytes", len(l.Digests), size)
		}
		ReadLeaves(bytes.NewReader(b), size, root)
		if top, err := ReadTop(bytes.NewReader(b), size, root); err == nil {
			top.CheckLeafBlock(0, make([]byte, 4096))
		}
	})
}
