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
	Salt      []byte
	BlockSize int    // the data block size
	Digests   []byte // sha256.Size bytes per data block
}

// Blocks returns the number of data blocks.
func (l *Leaves) Blocks() int64 { return int64(len(l.Digests) / sha256.Size) }

// Digest returns the digest of data block i.
func (l *Leaves) Digest(i int64) []byte { return l.Digests[i*sha256.Size : (i+1)*sha256.Size] }

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

// ReadLeaves reads the leaf level of the tree on hash, which must start
// with a superblock. With a root hash, every hash block above the leaves
// is checked first, top down, so that each leaf is known to be the
// digest the root hash vouches for; a data block that matches its leaf
// is then as good as one dm-verity read. Without one (nil), nothing is
// checked and the leaves are only a hint, fit to find where a block
// might be, never to trust it.
//
// A tree of a single data block has no leaf level (the root hash is the
// block's digest); ReadLeaves refuses it.
func ReadLeaves(hash io.ReaderAt, rootHash []byte) (*Leaves, error) {
	sb, err := ReadSuperblock(hash)
	if err != nil {
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
	l := &Leaves{Salt: sb.Salt, BlockSize: int(g.dbs), Digests: make([]byte, g.dataBlocks*sha256.Size)}
	if err := readFull(hash, l.Digests, g.levels[0].offset); err != nil {
		return nil, fmt.Errorf("reading verity leaves: %w", err)
	}
	return l, nil
}

// noData stands for a data device that is never read.
type noData struct{}

func (noData) ReadAt([]byte, int64) (int, error) {
	return 0, errors.New("verity: data read where only the tree was expected")
}
