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
// Hashing runs on runtime.NumCPU workers (at most 64) and streams: each
// worker holds 512 KiB of input (or one block, if larger) and the digests
// it yields, and every level is written to the hash device as it is
// produced and read back from there to build the next. Memory is thus
// bounded by the number of workers, not the image size: about 530 KiB per
// worker with 4 KiB blocks, plus the Go runtime (a 1 GiB image takes
// under 10 MiB of peak RSS on 2 cores).
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
	"hash"
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

// chunkBytes bounds the input one worker reads and hashes at a time
// (unless a single block is larger). Larger chunks were not faster.
const chunkBytes = 512 << 10

// maxWorkers caps the hashing goroutines, and with them memory, on big
// machines; hashing beyond that is limited by memory bandwidth anyway.
const maxWorkers = 64

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
	perBlock := g.hbs / sha256.Size
	var sizes []int64
	for n := g.dataBlocks; n > 1; {
		n = (n + perBlock - 1) / perBlock
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
// to build the next. *os.File is one. Format calls WriteAt from several
// goroutines at once, on ranges that do not overlap, as io.WriterAt allows.
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
	ws := g.newWorkers()
	for i, l := range g.levels {
		src, srcOff, srcBlocks, bs := g.children(i, data, hash)
		err := g.hashLevel(ws, src, srcOff, srcBlocks, bs, func(_ *worker, first int64, digests []byte) error {
			_, err := hash.WriteAt(digests, l.offset+first*sha256.Size)
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
	g, err := checkRoot(data, dataSize, hash, rootHash, p)
	if err != nil {
		return err
	}
	return g.verifyLevels(data, hash, 0)
}

// verifyLevels checks the levels of the tree from the top down to level
// lowest, each against the one above it; 0 checks the data too.
func (g *geometry) verifyLevels(data, hash io.ReaderAt, lowest int) error {
	ws := g.newWorkers()
	for i := len(g.levels) - 1; i >= lowest; i-- {
		l := g.levels[i]
		src, srcOff, srcBlocks, bs := g.children(i, data, hash)
		err := g.hashLevel(ws, src, srcOff, srcBlocks, bs, func(w *worker, first int64, want []byte) error {
			got := w.scratch[:len(want)]
			off := l.offset + first*sha256.Size
			if err := readFull(hash, got, off); err != nil {
				return fmt.Errorf("reading verity level %d: %w", i, err)
			}
			if bytes.Equal(got, want) {
				return nil
			}
			return g.mismatch(i, first, srcOff, srcBlocks, off, got, want)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// CheckRoot checks only the top of the tree: that the root hash is the
// hash of the top hash block described by hash's superblock. It reads one
// block, so abboot's init can tell a root hash that belongs to another
// image from a corrupted block (which dm-verity finds when it is read)
// before it sets up the device.
func CheckRoot(data io.ReaderAt, dataSize int64, hash io.ReaderAt, rootHash []byte) error {
	_, err := checkRoot(data, dataSize, hash, rootHash, Params{})
	return err
}

// checkRoot reads the geometry (from the superblock unless p.NoSuperblock)
// and compares the root hash.
func checkRoot(data io.ReaderAt, dataSize int64, hash io.ReaderAt, rootHash []byte, p Params) (*geometry, error) {
	if !p.NoSuperblock {
		sb, err := ReadSuperblock(hash)
		if err != nil {
			return nil, err
		}
		if sb.HashType != 1 || sb.Algorithm != algorithm {
			return nil, fmt.Errorf("verity superblock: hash type %d with %s is not supported (want 1 with %s)", sb.HashType, sb.Algorithm, algorithm)
		}
		covered := int64(sb.DataBlocks) * int64(sb.DataBlockSize)
		if dataSize < covered {
			return nil, fmt.Errorf("verity data is %d bytes, the superblock covers %d", dataSize, covered)
		}
		dataSize = covered
		p = Params{DataBlockSize: int(sb.DataBlockSize), HashBlockSize: int(sb.HashBlockSize), Salt: sb.Salt}
	}
	g, err := newGeometry(dataSize, p)
	if err != nil {
		return nil, err
	}
	if len(rootHash) != sha256.Size {
		return nil, fmt.Errorf("verity root hash is %d bytes, want %d", len(rootHash), sha256.Size)
	}
	root, err := g.root(data, hash)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(root, rootHash) {
		top := len(g.levels) - 1
		if top < 0 {
			return nil, &MismatchError{Device: "data", Block: 0, Offset: 0, Root: true}
		}
		return nil, &MismatchError{Device: "hash", Level: top, Block: g.levels[top].offset / g.hbs, Offset: g.levels[top].offset, Root: true}
	}
	return g, nil
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

// mismatch explains why the stored digests got, at offset off of level
// i, differ from want, recomputed from the children starting at
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

// A worker hashes one chunk of children at a time. Its buffers are
// allocated on first use and reused on every level, so memory depends
// neither on the image size nor on the number of levels.
type worker struct {
	h       hash.Hash
	in      []byte // the children, read from the device
	out     []byte // their digests, and after the last child the padding
	scratch []byte // for Verify: the stored digests, to compare with out
}

// newWorkers returns room for the workers of hashLevel; each is allocated
// when first used.
func (g *geometry) newWorkers() []*worker {
	return make([]*worker, min(runtime.NumCPU(), maxWorkers))
}

func (g *geometry) newWorker() *worker {
	in := max(chunkBytes, g.dbs, g.hbs)
	out := max(chunkBytes/g.dbs, chunkBytes/g.hbs, 1)*sha256.Size + g.hbs
	return &worker{h: sha256.New(), in: make([]byte, in), out: make([]byte, out), scratch: make([]byte, out)}
}

// hashLevel hashes the n blocks of bs bytes at offset off of src, the
// children of one level, on the workers ws. Each worker takes a run of
// about chunkBytes of children and hands emit their digests, to be stored
// at byte first*sha256.Size of the level; the run holding the last child
// also gets the zeros that complete the level's last hash block. Runs do
// not align with hash blocks, which keeps memory bounded whatever the
// block sizes. emit runs concurrently. On failure, hashLevel returns the
// error of the lowest failing run; no run above it is started.
func (g *geometry) hashLevel(ws []*worker, src io.ReaderAt, off, n, bs int64, emit func(w *worker, first int64, digests []byte) error) error {
	per := max(1, chunkBytes/bs) // children per run
	runs := (n + per - 1) / per
	// The zeros after the level's last digest, to the end of its block.
	pad := (n*sha256.Size+g.hbs-1)/g.hbs*g.hbs - n*sha256.Size
	var (
		next     atomic.Int64
		mu       sync.Mutex
		failed   = runs // lowest failed run
		firstErr error
		wg       sync.WaitGroup
	)
	for i := range min(int64(len(ws)), runs) {
		if ws[i] == nil {
			ws[i] = g.newWorker()
		}
		w := ws[i]
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				mu.Lock()
				stop := k >= failed
				mu.Unlock()
				if stop {
					return
				}
				first := k * per
				cnt := min(per, n-first)
				err := readFull(src, w.in[:cnt*bs], off+first*bs)
				if err == nil {
					outLen := cnt * sha256.Size
					if first+cnt == n {
						outLen += pad
						clear(w.out[cnt*sha256.Size : outLen])
					}
					for c := range cnt {
						w.h.Reset()
						w.h.Write(g.salt)
						w.h.Write(w.in[c*bs : (c+1)*bs])
						w.h.Sum(w.out[c*sha256.Size : c*sha256.Size])
					}
					err = emit(w, first, w.out[:outLen])
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

// PartitionUUIDs returns the UUIDs the Discoverable Partitions
// Specification gives a root partition and its verity partition from the
// root hash of the tree (a sha256, see ParseRootHash): the first 128 bits
// and the last 128 bits, big-endian.
func PartitionUUIDs(rootHash []byte) (root, verity guid.GUID) {
	return guid.FromBigEndian(rootHash[:16]), guid.FromBigEndian(rootHash[len(rootHash)-16:])
}

// ParseRootHash decodes a hex root hash as veritysetup prints it.
func ParseRootHash(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("root hash %q is not %d hex digits", s, 2*sha256.Size)
	}
	return b, nil
}
