package verity

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// Leaves is the lowest level of a hash tree: the digest of every data
// block, sha256(salt || block), in block order. It is a content index of
// the image: a block whose digest is known can be looked for in another
// image by digest alone, as long as both trees use the same salt.
type Leaves struct {
	Salt          []byte
	BlockSize     int    // the data block size
	HashBlockSize int    // the size of the hash blocks the digests are stored in
	Digests       []byte // sha256.Size bytes per data block
}

// Blocks returns the number of data blocks.
func (l *Leaves) Blocks() int64 { return int64(len(l.Digests) / sha256.Size) }

// Digest returns the digest of data block i.
func (l *Leaves) Digest(i int64) []byte { return l.Digests[i*sha256.Size : (i+1)*sha256.Size] }

// LeafBlock returns hash block k of the leaf level as stored: its
// digests and, in the last one, zeros after them.
func (l *Leaves) LeafBlock(k int64) []byte {
	b := make([]byte, l.HashBlockSize)
	start := k * int64(l.HashBlockSize)
	if start < int64(len(l.Digests)) {
		copy(b, l.Digests[start:])
	}
	return b
}

// Sum returns sha256(salt || block), the digest block would have in a
// tree with l's salt.
func (l *Leaves) Sum(block []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(l.Salt)
	h.Write(block)
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// Check reports whether block is data block i of the tree.
func (l *Leaves) Check(i int64, block []byte) bool {
	d := l.Sum(block)
	return len(block) == l.BlockSize && bytes.Equal(d[:], l.Digest(i))
}

// ReadLeaves reads the leaf level of the tree on hash, size bytes, which
// must start with a superblock describing a tree that fits in them. With a root hash, every hash block above the leaves
// is checked first, top down, so that each leaf is known to be the
// digest the root hash vouches for; a data block that matches its leaf
// is then as good as one dm-verity read. Without one (nil), nothing is
// checked and the leaves are only a hint, fit to find where a block
// might be, never to trust it.
//
// A tree of a single data block has no leaf level (the root hash is the
// block's digest); ReadLeaves refuses it.
func ReadLeaves(hash io.ReaderAt, size int64, rootHash []byte) (*Leaves, error) {
	sb, err := ReadSuperblock(hash)
	if err != nil {
		return nil, err
	}
	if err := fits(sb, size); err != nil {
		return nil, err
	}
	p := Params{DataBlockSize: int(sb.DataBlockSize), HashBlockSize: int(sb.HashBlockSize), Salt: sb.Salt}
	dataSize := int64(sb.DataBlocks) * int64(sb.DataBlockSize)
	var g *geometry
	if rootHash == nil {
		if sb.HashType != 1 || sb.Algorithm != algorithm {
			return nil, fmt.Errorf("verity superblock: hash type %d with %s is not supported (want 1 with %s)", sb.HashType, sb.Algorithm, algorithm)
		}
		g, err = newGeometry(dataSize, p)
	} else {
		// The data is never read: with a leaf level, the root hash
		// covers the top hash block.
		g, err = checkRoot(noData{}, dataSize, hash, rootHash, Params{})
	}
	if err != nil {
		return nil, err
	}
	if len(g.levels) == 0 {
		return nil, errors.New("verity tree of one data block has no leaves")
	}
	if rootHash != nil {
		if err := g.verifyLevels(nil, hash, 1); err != nil {
			return nil, err
		}
	}
	l := &Leaves{Salt: sb.Salt, BlockSize: int(g.dbs), HashBlockSize: int(g.hbs), Digests: make([]byte, g.dataBlocks*sha256.Size)}
	if err := readFull(hash, l.Digests, g.levels[0].offset); err != nil {
		return nil, fmt.Errorf("reading verity leaves: %w", err)
	}
	return l, nil
}

// fits checks that the tree sb describes fits in size bytes, before
// anything is allocated or read for it: the superblock is not covered by
// the root hash, and the one of a seed or a server may say anything.
func fits(sb *Superblock, size int64) error {
	if sb.DataBlocks == 0 || sb.DataBlocks > uint64(maxDataBytes/int64(sb.DataBlockSize)) {
		return fmt.Errorf("verity superblock: %d data blocks", sb.DataBlocks)
	}
	g, err := newGeometry(int64(sb.DataBlocks)*int64(sb.DataBlockSize), Params{DataBlockSize: int(sb.DataBlockSize), HashBlockSize: int(sb.HashBlockSize), Salt: sb.Salt})
	if err != nil {
		return err
	}
	if g.size > size {
		return fmt.Errorf("verity superblock describes a tree of %d bytes, the hash device has %d", g.size, size)
	}
	return nil
}

// noData stands for a data device that is never read.
type noData struct{}

func (noData) ReadAt([]byte, int64) (int, error) {
	return 0, errors.New("verity: data read where only the tree was expected")
}

// Top is a hash tree without its leaf level: the superblock and the
// levels above the leaves, checked against the root hash. It is what one
// needs to check the leaf level one hash block at a time, and so to take
// leaf blocks from wherever they are found (another version's tree) and
// fetch only the others. The leaf level is the tree's last part on the
// hash device, and by far its largest.
type Top struct {
	g     *geometry
	upper []byte // the hash device up to the leaf level
}

// ReadTop reads the superblock and the levels above the leaves from
// hash, of size bytes, which need hold nothing else, and checks them
// against the root hash. A tree of fewer than two levels (data of at most one hash block
// of leaves) has nothing above its leaves; ReadTop refuses it.
func ReadTop(hash io.ReaderAt, size int64, rootHash []byte) (*Top, error) {
	sb, err := ReadSuperblock(hash)
	if err != nil {
		return nil, err
	}
	if err := fits(sb, size); err != nil {
		return nil, err
	}
	g, err := newGeometry(int64(sb.DataBlocks)*int64(sb.DataBlockSize), Params{DataBlockSize: int(sb.DataBlockSize), HashBlockSize: int(sb.HashBlockSize), Salt: sb.Salt})
	if err != nil {
		return nil, err
	}
	if len(g.levels) < 2 {
		return nil, errors.New("verity tree has no level above its leaves")
	}
	t := &Top{g: g, upper: make([]byte, g.levels[0].offset)}
	if err := readFull(hash, t.upper, 0); err != nil {
		return nil, fmt.Errorf("reading the verity tree's upper levels: %w", err)
	}
	up := bytes.NewReader(t.upper)
	if _, err := checkRoot(noData{}, int64(sb.DataBlocks)*int64(sb.DataBlockSize), up, rootHash, Params{}); err != nil {
		return nil, err
	}
	if err := g.verifyLevels(nil, up, 2); err != nil {
		return nil, err
	}
	return t, nil
}

// Leaves returns the byte offset and size of the leaf level on the hash
// device, and its hash block size.
func (t *Top) Leaves() (off, size, blockSize int64) {
	return t.g.levels[0].offset, t.g.levels[0].blocks * t.g.hbs, t.g.hbs
}

// Upper returns the hash device up to the leaf level.
func (t *Top) Upper() []byte { return t.upper }

// CheckLeafBlock reports whether b is hash block k of the leaf level.
func (t *Top) CheckLeafBlock(k int64, b []byte) bool {
	if int64(len(b)) != t.g.hbs || k < 0 || k >= t.g.levels[0].blocks {
		return false
	}
	h := sha256.New()
	h.Write(t.g.salt)
	h.Write(b)
	off := t.g.levels[1].offset + k*sha256.Size
	return bytes.Equal(h.Sum(nil), t.upper[off:off+sha256.Size])
}
