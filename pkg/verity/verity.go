// Package verity builds and checks dm-verity hash trees in the on-disk
// format of cryptsetup's veritysetup (format version 1, sha256), with or
// without veritysetup's 512-byte superblock at the start of the hash
// device. A tree from Format passes `veritysetup verify` and, given the
// same salt and uuid, is byte for byte what `veritysetup format` writes;
// Verify accepts what veritysetup writes.
//
// The format (kernel Documentation/admin-guide/device-mapper/verity.rst,
// cryptsetup lib/verity/verity_hash.c): each data block is hashed as
// sha256(salt || block); the digests are packed into hash blocks
// (hash block size / 32 of them, the rest of the last block zero), and
// those hash blocks are hashed the same way into the level above, until a
// level fits in one block. The root hash is the hash of that top block (of
// the only data block when there is just one, and then there is no tree).
// Levels are stored top level first, right after the superblock, which
// takes one hash block.
//
// Hashing runs on runtime.NumCPU workers and streams: each worker holds
// one chunk of at most 1 MiB of input and the few hash blocks it yields,
// and every level is written to the hash device as it is produced and read
// back from there to build the next, so memory stays a few MiB whatever
// the image size.
//
// It does not set up device-mapper targets, handle Chrome OS (version 0)
// trees, hash algorithms other than sha256, forward error correction or
// root hash signatures, and it refuses data whose size is not a multiple
// of the data block size (veritysetup silently leaves such a tail out of
// the tree, which would leave it unprotected).
package verity

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/abboot/abboot/pkg/guid"
)

// DefaultBlockSize is veritysetup's default data and hash block size.
const DefaultBlockSize = 4096

// DefaultSaltSize is the size of the random salt veritysetup chooses.
const DefaultSaltSize = 32

// algorithm is the only hash algorithm supported.
const algorithm = "sha256"

// maxDataBytes bounds the data size so that byte offsets fit an int64.
const maxDataBytes = math.MaxInt64

// chunkBytes bounds the input one worker reads and hashes at a time.
const chunkBytes = 1 << 20

// Params describes a hash tree.
type Params struct {
	// DataBlockSize and HashBlockSize are powers of two from 512 bytes
	// to 512 KiB; 0 means DefaultBlockSize.
	DataBlockSize, HashBlockSize int
	// Salt is hashed before every block; empty means no salt
	// (veritysetup --salt -). NewParams picks a random one.
	Salt []byte
	// NoSuperblock omits the superblock (veritysetup --no-superblock);
	// the tree then starts at offset 0 of the hash device and whoever
	// checks it must be given the salt and block sizes.
	NoSuperblock bool
	// UUID goes into the superblock; Format picks a random one when it is
	// zero, as veritysetup does.
	UUID guid.GUID
}

// NewParams returns veritysetup's defaults: 4096-byte blocks, a
// superblock, a random 32-byte salt and a random uuid.
func NewParams() (Params, error) {
	p := Params{DataBlockSize: DefaultBlockSize, HashBlockSize: DefaultBlockSize, Salt: make([]byte, DefaultSaltSize)}
	if _, err := rand.Read(p.Salt); err != nil {
		return p, fmt.Errorf("generating verity salt: %w", err)
	}
	var err error
	p.UUID, err = guid.New()
	return p, err
}

func checkBlockSize(bs int64) error {
	if bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return fmt.Errorf("verity block size %d is not a power of two from %d to %d", bs, minBlockSize, maxBlockSize)
	}
	return nil
}

// geometry is where a tree's pieces lie on the hash device.
type geometry struct {
	dataBlocks int64
	dbs, hbs   int64
	salt       []byte
	superblock bool
	perBlock   int64 // digests per hash block
	// levels[0] holds the digests of the data blocks, levels[len-1] is
	// the single top block; they are stored in the reverse order.
	levels []level
	size   int64 // bytes of the hash device in use
}

type level struct {
	offset int64 // byte offset on the hash device
	blocks int64
}

func newGeometry(dataSize int64, p Params) (*geometry, error) {
	g := &geometry{dbs: int64(p.DataBlockSize), hbs: int64(p.HashBlockSize), salt: p.Salt, superblock: !p.NoSuperblock}
	if g.dbs == 0 {
		g.dbs = DefaultBlockSize
	}
	if g.hbs == 0 {
		g.hbs = DefaultBlockSize
	}
	for _, bs := range []int64{g.dbs, g.hbs} {
		if err := checkBlockSize(bs); err != nil {
			return nil, err
		}
	}
	if len(p.Salt) > MaxSaltSize {
		return nil, fmt.Errorf("verity salt of %d bytes exceeds %d", len(p.Salt), MaxSaltSize)
	}
	if dataSize <= 0 || dataSize%g.dbs != 0 {
		return nil, fmt.Errorf("verity data size %d is not a positive multiple of the %d-byte data block size", dataSize, g.dbs)
	}
	g.dataBlocks = dataSize / g.dbs
	// Both sizes are powers of two and hbs >= 512 > sha256.Size, so the
	// digests fill a hash block exactly with no per-digest padding.
	g.perBlock = g.hbs / sha256.Size
	var sizes []int64
	for n := g.dataBlocks; n > 1; {
		n = (n + g.perBlock - 1) / g.perBlock
		sizes = append(sizes, n)
	}
	g.levels = make([]level, len(sizes))
	if g.superblock {
		// The superblock takes the first hash block (VERITY_hash_offset_block).
		g.size = g.hbs
	}
	for i := len(sizes) - 1; i >= 0; i-- {
		g.levels[i] = level{offset: g.size, blocks: sizes[i]}
		g.size += sizes[i] * g.hbs
	}
	return g, nil
}

// HashOffset returns the byte offset of the tree on the hash device: one
// hash block with a superblock, else 0. dm-verity's hash_start_block is
// this divided by the hash block size.
func HashOffset(p Params) int64 {
	if p.NoSuperblock {
		return 0
	}
	if p.HashBlockSize == 0 {
		return DefaultBlockSize
	}
	return int64(p.HashBlockSize)
}

// TreeSize returns the size of the hash device that Format writes for
// dataSize bytes of data: superblock (if any) and tree.
func TreeSize(dataSize int64, p Params) (int64, error) {
	g, err := newGeometry(dataSize, p)
	if err != nil {
		return 0, err
	}
	return g.size, nil
}

// ReadWriterAt is what Format writes the tree to; it reads each level back
// to build the next. *os.File is one.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// Format computes the hash tree of the first dataSize bytes of data, writes
// it (and the superblock unless p.NoSuperblock) to hash and returns the
// root hash. The superblock is written last, so an interrupted Format
// leaves no device that claims to hold a tree.
func Format(data io.ReaderAt, dataSize int64, hash ReadWriterAt, p Params) ([]byte, error) {
	g, err := newGeometry(dataSize, p)
	if err != nil {
		return nil, err
	}
	for i, l := range g.levels {
		src, srcOff, srcBlocks, bs := g.children(i, data, hash)
		err := g.hashLevel(src, srcOff, srcBlocks, bs, func(first, _ int64, blocks []byte) error {
			_, err := hash.WriteAt(blocks, l.offset+first*g.hbs)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("writing verity level %d: %w", i, err)
		}
	}
	root, err := g.root(data, hash)
	if err != nil {
		return nil, err
	}
	if g.superblock {
		sb := &Superblock{HashType: 1, UUID: p.UUID, Algorithm: algorithm, DataBlockSize: uint32(g.dbs), HashBlockSize: uint32(g.hbs), DataBlocks: uint64(g.dataBlocks), Salt: g.salt}
		if sb.UUID.IsZero() {
			if sb.UUID, err = guid.New(); err != nil {
				return nil, err
			}
		}
		b, err := sb.MarshalBinary()
		if err != nil {
			return nil, err
		}
		// Zero the rest of the superblock's hash block as veritysetup does.
		b = append(b, make([]byte, g.hbs-SuperblockSize)...)
		if _, err := hash.WriteAt(b, 0); err != nil {
			return nil, fmt.Errorf("writing verity superblock: %w", err)
		}
	}
	return root, nil
}

// Verify checks data against the tree on hash and the root hash. With a
// superblock (p.NoSuperblock false) the block sizes, salt and number of
// data blocks come from it and the rest of p is ignored; dataSize must
// then be at least what the superblock covers. Without one, p must give
// the salt and block sizes used by Format, and all of dataSize is checked.
//
// It checks top-down, each level against the one above it, which is
// already known good, so a *MismatchError names the block that was
// actually changed: the highest one in the tree, and the first one in its
// level.
func Verify(data io.ReaderAt, dataSize int64, hash io.ReaderAt, rootHash []byte, p Params) error {
	if !p.NoSuperblock {
		sb, err := ReadSuperblock(hash)
		if err != nil {
			return err
		}
		if sb.HashType != 1 || sb.Algorithm != algorithm {
			return fmt.Errorf("verity superblock: hash type %d with %s is not supported (want 1 with %s)", sb.HashType, sb.Algorithm, algorithm)
		}
		covered := int64(sb.DataBlocks) * int64(sb.DataBlockSize)
		if dataSize < covered {
			return fmt.Errorf("verity data is %d bytes, the superblock covers %d", dataSize, covered)
		}
		dataSize = covered
		p = Params{DataBlockSize: int(sb.DataBlockSize), HashBlockSize: int(sb.HashBlockSize), Salt: sb.Salt}
	}
	g, err := newGeometry(dataSize, p)
	if err != nil {
		return err
	}
	if len(rootHash) != sha256.Size {
		return fmt.Errorf("verity root hash is %d bytes, want %d", len(rootHash), sha256.Size)
	}
	root, err := g.root(data, hash)
	if err != nil {
		return err
	}
	if !bytes.Equal(root, rootHash) {
		top := len(g.levels) - 1
		if top < 0 {
			return &MismatchError{Device: "data", Block: 0, Offset: 0, Root: true}
		}
		return &MismatchError{Device: "hash", Level: top, Block: g.levels[top].offset / g.hbs, Offset: g.levels[top].offset, Root: true}
	}
	for i := len(g.levels) - 1; i >= 0; i-- {
		l := g.levels[i]
		src, srcOff, srcBlocks, bs := g.children(i, data, hash)
		err := g.hashLevel(src, srcOff, srcBlocks, bs, func(first, firstChild int64, want []byte) error {
			got := make([]byte, len(want))
			off := l.offset + first*g.hbs
			if err := readFull(hash, got, off); err != nil {
				return fmt.Errorf("reading verity level %d: %w", i, err)
			}
			if bytes.Equal(got, want) {
				return nil
			}
			return g.mismatch(i, firstChild, srcOff, srcBlocks, off, got, want)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// children returns what level i hashes: the data blocks for level 0, else
// the blocks of level i-1 on the hash device.
func (g *geometry) children(i int, data, hash io.ReaderAt) (src io.ReaderAt, off, blocks, bs int64) {
	if i == 0 {
		return data, 0, g.dataBlocks, g.dbs
	}
	below := g.levels[i-1]
	return hash, below.offset, below.blocks, g.hbs
}

// mismatch explains why the stored hash blocks got, at offset off of
// level i, differ from want, recomputed from the children starting at
// firstChild. got and want must differ.
func (g *geometry) mismatch(i int, firstChild, srcOff, srcBlocks, off int64, got, want []byte) error {
	j := 0
	for got[j] == want[j] {
		j++
	}
	d := int64(j / sha256.Size) // the first differing digest
	child := firstChild + d
	switch {
	case child >= srcBlocks:
		// Past the last digest: the zero padding of a hash block whose
		// parent vouches for it.
		hb := (off + int64(j)) / g.hbs
		return &MismatchError{Device: "hash", Level: i, Block: hb, Offset: hb * g.hbs, Padding: true}
	case i == 0:
		return &MismatchError{Device: "data", Block: child, Offset: child * g.dbs}
	}
	o := srcOff + child*g.hbs
	return &MismatchError{Device: "hash", Level: i - 1, Block: o / g.hbs, Offset: o}
}

// root returns the root hash: the hash of the top hash block, or of the
// only data block when there is no tree.
func (g *geometry) root(data, hash io.ReaderAt) ([]byte, error) {
	src, off, bs := data, int64(0), g.dbs
	if n := len(g.levels); n > 0 {
		src, off, bs = hash, g.levels[n-1].offset, g.hbs
	}
	b := make([]byte, bs)
	if err := readFull(src, b, off); err != nil {
		return nil, fmt.Errorf("reading the top verity block: %w", err)
	}
	h := sha256.New()
	h.Write(g.salt)
	h.Write(b)
	return h.Sum(nil), nil
}

// hashLevel hashes n blocks of bs bytes read from src at off into the hash
// blocks of the level above, on runtime.NumCPU workers. Each worker takes
// a chunk of children (whole hash blocks' worth, about chunkBytes) and
// hands the hash blocks it computed to emit, with the index of the first
// hash block in the level and of the first child. emit runs concurrently.
// On failure, hashLevel returns the error of the lowest failing chunk;
// workers do not start chunks above it.
func (g *geometry) hashLevel(src io.ReaderAt, off, n, bs int64, emit func(first, firstChild int64, blocks []byte) error) error {
	perChunk := max(1, chunkBytes/(bs*g.perBlock)) // hash blocks per chunk
	childrenPerChunk := perChunk * g.perBlock
	chunks := (n + childrenPerChunk - 1) / childrenPerChunk
	var (
		next     atomic.Int64
		mu       sync.Mutex
		failed   = chunks // lowest failed chunk
		firstErr error
		wg       sync.WaitGroup
	)
	for range min(int64(runtime.NumCPU()), chunks) {
		wg.Go(func() {
			in := make([]byte, childrenPerChunk*bs)
			out := make([]byte, perChunk*g.hbs)
			h := sha256.New()
			for {
				k := next.Add(1) - 1
				mu.Lock()
				stop := k >= failed
				mu.Unlock()
				if stop {
					return
				}
				first := k * childrenPerChunk
				cnt := min(childrenPerChunk, n-first)
				err := readFull(src, in[:cnt*bs], off+first*bs)
				if err == nil {
					outLen := (cnt + g.perBlock - 1) / g.perBlock * g.hbs
					clear(out[:outLen])
					for c := range cnt {
						h.Reset()
						h.Write(g.salt)
						h.Write(in[c*bs : (c+1)*bs])
						h.Sum(out[c*sha256.Size : c*sha256.Size])
					}
					err = emit(k*perChunk, first, out[:outLen])
				}
				if err != nil {
					mu.Lock()
					if k < failed {
						failed, firstErr = k, err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// readFull fills b from r at off; running out of input is an error.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("short read at offset %d: %d of %d bytes", off, n, len(b))
	}
	return err
}

// A MismatchError reports a block whose hash does not match the tree.
type MismatchError struct {
	Device  string // "data" or "hash"
	Block   int64  // index on that device, in data or hash blocks
	Offset  int64  // byte offset on that device
	Level   int    // for a hash block, its tree level; 0 holds the data digests
	Root    bool   // the block is the one the root hash covers
	Padding bool   // the block's zero padding after its last digest is not zero
}

func (e *MismatchError) Error() string {
	what := fmt.Sprintf("%s block %d (offset %d)", e.Device, e.Block, e.Offset)
	if e.Device == "hash" {
		what = fmt.Sprintf("hash block %d (level %d, offset %d)", e.Block, e.Level, e.Offset)
	}
	switch {
	case e.Padding:
		return "verity: " + what + " has non-zero padding"
	case e.Root:
		return "verity: " + what + " does not match the root hash"
	}
	return "verity: " + what + " does not match its hash"
}

// ParseRootHash decodes a hex root hash as veritysetup prints it.
func ParseRootHash(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("root hash %q is not %d hex digits", s, 2*sha256.Size)
	}
	return b, nil
}
