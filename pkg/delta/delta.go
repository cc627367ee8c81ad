// Package delta reads an update bundle from an HTTP(S) server while
// fetching only the blocks of its root image that the device does not
// already have. The new root's dm-verity tree is a signed index of every
// block (its leaves, sha256(salt || block), see verity.Leaves): each new
// block is looked up by its leaf in the slots already on the device (the
// seeds: the running slot and the inactive one), copied from there when
// found, and fetched otherwise, in merged Range requests (RFC 9110 §14)
// on the bundle itself, so the server needs nothing but range support.
//
// A Source is the bundle as one byte stream, in bundle order, so that
// bundle.NewReader and the installer consume it as they consume a full
// download (rule 6's write order, the read-back, the tree's and the UKI's
// hashes): the Source only changes where the bytes come from. The root
// payload's sha256 is not computed a second time (bundle.Reader.Vouch):
// each of its blocks was checked against the signed tree. The order of
// work is:
//
//  1. Open fetches the start of the bundle (header, manifest, signature);
//     a server without range support gets a plain full download instead;
//  2. bundle.NewReader reads that header from the Source and checks the
//     signature and the policy; only then does Plan act on the manifest:
//     it fetches the verity tree, checks every hash block above the
//     leaves against the signed root hash (verity.ReadLeaves), indexes
//     the seeds and plans which blocks to copy and which to fetch;
//  3. reading on yields the root, block by block, each one checked
//     against its leaf before it is handed out, whether it was copied or
//     fetched: a seed block that does not match (the seed is corrupt, or
//     it was overwritten) is fetched instead, a fetched range that does
//     not match is fetched again, up to three times, and never handed on;
//     then the tree, then the UKI: fetched while the root is written
//     (or when the installer read it ahead, by ReadAt, for Secure Boot's
//     check), once, by PE section, the big sections taken from the UKIs
//     on the device where they have the same (uki.go).
//
// An interrupted transfer resumes: a broken connection is resumed by
// fetch.OpenRange, and an install that is run again after a crash or a
// power cut finds the blocks the first one wrote in the target slot
// (Seed.Target) and fetches only the rest.
//
// Blocks that the target holds in place already, Source.InPlace tells
// the installer, which need not write them.
//
// The package does not write anything, check signatures or decide which
// slots to use; it fetches the tree's leaf blocks that no seed's tree has
// whole (the tree is mostly leaves, which are the index itself).
package delta

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/fetch"
	"github.com/abboot/abboot/pkg/verity"
)

// A Seed is a root image already on the device, whose blocks a new root
// may share.
type Seed struct {
	// Name says which one it is in events, e.g. "a".
	Name string
	// Data is the root image, of Size bytes at most.
	Data io.ReaderAt
	Size int64
	// Hash is its verity tree (with superblock), used as an index of
	// Data when its salt and block size are the new tree's; nil, or a
	// tree that does not fit, and Data is hashed instead (a full read),
	// except for the Target. HashSize is its size in bytes.
	Hash     io.ReaderAt
	HashSize int64
	// Target marks the partition the new root is being written to. Its
	// blocks change as the install goes, so one of its blocks is used
	// only at or after the position being produced (the writer is behind
	// the reader); and a block that no seed has is looked for in place,
	// where an interrupted install of the same root left it.
	Target bool
}

// Options tune a Source.
type Options struct {
	// Fetch is passed to fetch.OpenRange and fetch.Open; its ETag is set
	// to the bundle's.
	Fetch fetch.Options
	// Gap merges two runs of blocks to fetch into one request when at
	// most this many blocks lie between them; 0 means DefaultGap.
	Gap int
	// MaxRange bounds one request, in bytes; 0 means DefaultMaxRange.
	// Fetched ranges wait to be checked in at most fetchBuffer bytes (or
	// one range, if larger).
	MaxRange int64
	// Log, if set, receives events (name "delta") with the signature of
	// event.Logger.Log.
	Log func(name string, kv ...any)
	// UKIs are the UKIs already on the device (the slots' on the ESP):
	// the new UKI's big sections are taken from them where they have a
	// section of the same name and size (see fetchUKI).
	UKIs []io.ReaderAt
}

// DefaultGap is Options.Gap's default: fetching a few blocks that a
// seed has costs less than one more request (issue 14: merging gaps of
// up to 4 blocks turned 215 requests into 137 for 0.1% more bytes).
const DefaultGap = 4

// DefaultMaxRange is Options.MaxRange's default.
const DefaultMaxRange = 4 << 20

// headerFetch is how much of the bundle's start the first request asks
// for: the header, a manifest of usual size and the signature.
const headerFetch = 4096

// fetchRetries is how often a range whose bytes do not match their
// leaves is fetched again before the install fails.
const fetchRetries = 3

// prefetch is how many ranges are fetched at once: several requests in
// flight hide the network's latency. Fetched ranges wait to be checked
// in fetchBuffer bytes, counted in tokens of tokenBytes, so that the
// fetcher runs ahead over many small ranges (a one-package update has
// ~130 of ~30 KiB) instead of a round trip stalling the install at each.
const (
	prefetch    = 4
	fetchBuffer = 16 << 20
	tokenBytes  = 64 << 10
)

// treePrefetch is how many runs of leaf blocks are fetched at once: they
// are few (6 for a one-package update of bench/delta's erofs pair) and
// small, and the whole plan waits for the last.
const treePrefetch = 16

// Mode says how a Source gets the bundle.
type Mode string

const (
	// ModeDelta copies what the seeds have and fetches the rest.
	ModeDelta Mode = "delta"
	// ModeRanges fetches every payload whole, by range: there is no
	// root, or its tree does not cover it.
	ModeRanges Mode = "ranges"
	// ModeFull is a plain download: the server does not serve ranges.
	ModeFull Mode = "full"
)

// Stats count what a Source did so far.
type Stats struct {
	Mode     Mode
	Fetched  int64 // bytes received, the bundle's header, tree and UKI included
	Reused   int64 // bytes taken from the device: root blocks, UKI sections
	InPlace  int64 // of Reused, bytes the target already held where they belong
	Requests int64 // HTTP requests, reconnects not counted
	Refused  int64 // blocks received that did not match their leaves
	Misses   int64 // seed blocks that did not match their leaves, fetched instead
}

// Source is a bundle at a URL, read as a stream; see the package comment.
type Source struct {
	ctx  context.Context
	url  string
	o    Options
	mode Mode
	full io.ReadCloser // ModeFull's download

	hdr   []byte // the bundle's first bytes, before Plan
	pos   int64  // bytes read so far, before Plan
	parts []io.Reader
	root  *assembler

	start                                               time.Time
	fetched, reused, inPlace, requests, refused, misses atomic.Int64

	// ahead is the last range ReadAt fetched: a payload read ahead (the
	// UKI, for a Secure Boot check) is served from it when the stream
	// gets there, instead of being fetched a second time.
	ahead fetch.Ahead

	// uki is the UKI payload, once planned; ukis are Options.UKIs parsed.
	uki     *lazyRange
	ukiOnce sync.Once
	ukis    []ukiSeed
}

// Open starts reading the bundle at url: it fetches its first bytes by
// range, or, when the server does not serve ranges, starts a full
// download. Read the header with bundle.NewReader, then call Plan.
func Open(ctx context.Context, url string, o Options) (*Source, error) {
	if o.Gap == 0 {
		o.Gap = DefaultGap
	}
	if o.MaxRange == 0 {
		o.MaxRange = DefaultMaxRange
	}
	s := &Source{ctx: ctx, url: url, o: o, mode: ModeRanges, start: time.Now()}
	b, etag, err := s.fetchRange(0, headerFetch)
	if errors.Is(err, fetch.ErrNoRange) {
		s.log("step", "open", "mode", ModeFull, "reason", "no range support")
		s.mode = ModeFull
		s.requests.Add(1)
		s.full, err = fetch.Open(ctx, url, o.Fetch)
		return s, err
	}
	if err != nil {
		return nil, err
	}
	s.hdr, s.o.Fetch.ETag = b, etag
	return s, nil
}

func (s *Source) log(kv ...any) {
	if s.o.Log != nil {
		s.o.Log("delta", kv...)
	}
}

// Stats returns what the Source did so far; it may be called while
// another goroutine reads.
func (s *Source) Stats() Stats {
	return Stats{Mode: s.mode, Fetched: s.fetched.Load(), Reused: s.reused.Load(), InPlace: s.inPlace.Load(), Requests: s.requests.Load(), Refused: s.refused.Load(), Misses: s.misses.Load()}
}

// fetchRange fetches n bytes at off (fewer at the end of the bundle).
func (s *Source) fetchRange(off, n int64) ([]byte, string, error) {
	s.requests.Add(1)
	r, err := fetch.OpenRange(s.ctx, s.url, off, n, s.o.Fetch)
	if err != nil {
		return nil, "", err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	s.fetched.Add(int64(len(b)))
	if err != nil {
		return nil, "", err
	}
	return b, fetch.ETag(r), nil
}

// Read reads the bundle.
func (s *Source) Read(p []byte) (int, error) {
	switch {
	case s.full != nil:
		n, err := s.full.Read(p)
		s.fetched.Add(int64(n))
		return n, err
	case s.parts == nil:
		// The header: what Open fetched, and more if the manifest is
		// longer than that.
		if s.pos == int64(len(s.hdr)) {
			b, _, err := s.fetchRange(s.pos, bundle.MaxManifestSize)
			if err != nil {
				return 0, fmt.Errorf("fetching the bundle's manifest: %w", err)
			}
			s.hdr = append(s.hdr, b...)
		}
		n := copy(p, s.hdr[s.pos:])
		s.pos += int64(n)
		return n, nil
	}
	for len(s.parts) > 0 {
		n, err := s.parts[0].Read(p)
		if err == io.EOF {
			s.parts = s.parts[1:]
			err = nil
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
	return 0, io.EOF
}

// ReadAt reads len(p) bytes at off of the bundle by range, from the
// version of it the Source reads (its ETag), counted in Stats, so that a
// part of the bundle can be checked before its turn in the stream (the
// UKI, under Secure Boot). The bytes of the last call are kept: a payload
// they cover whole is read from them, not fetched again. In ModeFull it
// fails with fetch.ErrNoRange, which wraps errors.ErrUnsupported.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if s.mode == ModeFull {
		return 0, fmt.Errorf("reading %s at byte %d: %w", s.url, off, fetch.ErrNoRange)
	}
	if len(p) == 0 {
		return 0, nil
	}
	var b []byte
	var err error
	if l := s.uki; l != nil && off == l.off && int64(len(p)) == l.n {
		b, err = l.fetch()
	} else {
		b, _, err = s.fetchRange(off, int64(len(p)))
	}
	n := copy(p, b)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	s.ahead.Keep(off, b[:n])
	return n, err
}

// Close stops the transfer.
func (s *Source) Close() error {
	if s.root != nil {
		s.root.stop()
	}
	if s.full != nil {
		return s.full.Close()
	}
	return nil
}

// InPlace says whether the root payload's bytes from off on are in place
// (the target seed, Seed.Target, holds them at the same offset, checked
// against their leaves before Read handed them out) and how many bytes
// from off are, or are not, in place. An installer writing the root to
// the target need not write those bytes again (install.Options.InPlace).
// Only bytes Read has handed out are ever in place; it may be called
// while another goroutine reads.
func (s *Source) InPlace(off int64) (bool, int64) {
	if s.root == nil {
		return false, math.MaxInt64
	}
	return s.root.inPlace(off)
}

// Plan decides where each payload of r's bundle comes from; r must have
// been read from s by bundle.NewReader, which checked the manifest's
// signature, and no payload read yet. The seeds are read, never written;
// each is used only for what its blocks are found to hold.
func (s *Source) Plan(r *bundle.Reader, seeds []Seed) error {
	if s.mode == ModeFull {
		return nil
	}
	if s.parts != nil {
		return errors.New("delta: planned twice")
	}
	m := r.Manifest
	if s.pos != r.Offset(0) {
		return fmt.Errorf("delta: %d bytes were read before the payloads, the bundle's header has %d", s.pos, r.Offset(0))
	}
	s.hdr = nil
	var parts []io.Reader
	for i, p := range m.Payloads {
		l := &lazyRange{s: s, off: r.Offset(i), n: p.Size}
		if p.Name == bundle.PayloadUKI {
			l.sum, s.uki = p.SHA256, l
		}
		parts = append(parts, l)
	}
	root, tree := slices.IndexFunc(m.Payloads, isPayload(bundle.PayloadRoot)), slices.IndexFunc(m.Payloads, isPayload(bundle.PayloadVerity))
	if root >= 0 && tree >= 0 {
		a, treeBytes, err := s.plan(r, root, tree, seeds)
		switch {
		case err != nil:
			return err
		case a != nil:
			s.mode, s.root = ModeDelta, a
			parts[root], parts[tree] = a, bytes.NewReader(treeBytes)
			// Every root block is checked against its leaf before it
			// is handed on: hashing the whole again would cost a
			// second pass over the image.
			r.Vouch(bundle.PayloadRoot)
			if k := slices.IndexFunc(m.Payloads, isPayload(bundle.PayloadUKI)); k > root {
				a.tail, _ = parts[k].(*lazyRange)
			}
			a.start()
		default:
			parts[tree] = bytes.NewReader(treeBytes)
		}
	}
	s.parts = parts
	return nil
}

func isPayload(name string) func(bundle.Payload) bool {
	return func(p bundle.Payload) bool { return p.Name == name }
}

// plan fetches the tree and plans the root. It returns no assembler,
// only the tree, when the tree does not cover the root payload exactly:
// the root is then fetched whole.
func (s *Source) plan(r *bundle.Reader, root, tree int, seeds []Seed) (*assembler, []byte, error) {
	m := r.Manifest
	tp := m.Payloads[tree]
	rootHash, err := verity.ParseRootHash(m.RootHash)
	if err != nil {
		return nil, nil, err
	}
	// The seeds' own trees, read once and sorted by digest: an index of
	// their blocks, and leaf blocks the new tree may share. They are
	// read from the disk while the new tree's top comes over the network.
	// fetchTree needs their leaves only: they are indexed while the
	// new tree's leaves come.
	seedTrees := make([]seedTree, len(seeds))
	seedLeaves := make([]*verity.Leaves, len(seeds))
	var read, indexed sync.WaitGroup
	for i, sd := range seeds {
		if sd.Hash != nil {
			read.Add(1)
			indexed.Go(func() {
				// A seed without a readable tree is hashed (see index).
				l, err := verity.ReadLeaves(sd.Hash, sd.HashSize, nil)
				if err == nil {
					seedLeaves[i] = l
				}
				read.Done()
				if err == nil {
					seedTrees[i] = seedTree{l, newIndex(l.Digests)}
				}
			})
		}
	}
	tb, checked, err := s.fetchTree(r.Offset(tree), tp.Size, rootHash, func() []*verity.Leaves { read.Wait(); return seedLeaves })
	indexed.Wait()
	if err != nil {
		return nil, nil, fmt.Errorf("fetching the verity tree: %w", err)
	}
	if sum := sha256.Sum256(tb); hex.EncodeToString(sum[:]) != tp.SHA256 {
		return nil, nil, fmt.Errorf("delta: the fetched verity tree does not match the manifest: %w", bundle.ErrHashMismatch)
	}
	want := rootHash
	if checked {
		want = nil // hashing it all again would take 2 ms of the plan
	}
	leaves, err := verity.ReadLeaves(bytes.NewReader(tb), int64(len(tb)), want)
	if err != nil {
		return nil, nil, fmt.Errorf("delta: the bundle's verity tree: %w", err)
	}
	if rp := m.Payloads[root]; leaves.Blocks()*int64(leaves.BlockSize) != rp.Size {
		s.log("step", "plan", "mode", ModeRanges, "reason", fmt.Sprintf("the tree covers %d of the root's %d bytes", leaves.Blocks()*int64(leaves.BlockSize), rp.Size))
		return nil, tb, nil
	}
	a := &assembler{s: s, leaves: leaves, base: r.Offset(root), bs: int64(leaves.BlockSize)}
	if err := a.plan(seeds, seedTrees); err != nil {
		return nil, nil, err
	}
	return a, tb, nil
}

// fetchTree returns the new tree, of size bytes at off in the bundle: its
// upper levels fetched and checked against the root hash, then each hash
// block of its leaf level taken from a seed's tree where the seed's block
// at the same place checks against the level above, and fetched where
// none does. The leaf level is 0.8% of the image (a digest per 4 KiB
// block) and does not compress; the blocks of an unchanged region are
// the same in both versions' trees. checked says that every hash block
// was checked against the root hash on the way.
func (s *Source) fetchTree(off, size int64, rootHash []byte, seedLeaves func() []*verity.Leaves) (tb []byte, checked bool, err error) {
	top, err := verity.ReadTop(io.NewSectionReader(s, off, size), size, rootHash)
	var loff, lsize, hbs int64
	if err == nil {
		loff, lsize, hbs = top.Leaves()
	}
	if err != nil || loff+lsize != size {
		// A tree too small to have levels above its leaves, or with
		// more than a tree in the payload: fetch it whole.
		b, _, err := s.fetchRange(off, size)
		return b, false, err
	}
	tb = make([]byte, size)
	copy(tb, top.Upper())
	var missing []extent
	for k := range lsize / hbs {
		dst := tb[loff+k*hbs : loff+(k+1)*hbs]
		found := false
		for _, l := range seedLeaves() {
			if l != nil && int64(l.HashBlockSize) == hbs {
				if b := l.LeafBlock(k); top.CheckLeafBlock(k, b) {
					copy(dst, b)
					found = true
					break
				}
			}
		}
		if found {
			continue
		}
		if n := len(missing); n > 0 && k-(missing[n-1].block+missing[n-1].n) <= int64(s.o.Gap) {
			missing[n-1].n = k + 1 - missing[n-1].block
		} else {
			missing = append(missing, extent{block: k, n: 1})
		}
	}
	// The runs are fetched prefetch at a time: each is a round trip.
	var (
		fetched  atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		tokens   = make(chan struct{}, treePrefetch)
	)
	for _, e := range missing {
		tokens <- struct{}{}
		wg.Go(func() {
			defer func() { <-tokens }()
			if err := s.fetchLeaves(top, tb, off, e); err != nil {
				mu.Lock()
				firstErr = cmp.Or(firstErr, err)
				mu.Unlock()
				return
			}
			fetched.Add(e.n)
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, false, firstErr
	}
	s.log("step", "tree", "leaf_blocks", lsize/hbs, "fetched", fetched.Load(), "requests", len(missing), "elapsed_ms", time.Since(s.start).Milliseconds())
	return tb, true, nil
}

// fetchLeaves fetches the run e of leaf blocks of the tree at off into
// tb, once they match the level above, up to fetchRetries times again.
func (s *Source) fetchLeaves(top *verity.Top, tb []byte, off int64, e extent) error {
	loff, _, hbs := top.Leaves()
	for try := 0; ; try++ {
		b, _, err := s.fetchRange(off+loff+e.block*hbs, e.n*hbs)
		if err != nil {
			return err
		}
		good := int64(len(b)) == e.n*hbs
		for c := int64(0); good && c < e.n; c++ {
			good = top.CheckLeafBlock(e.block+c, b[c*hbs:(c+1)*hbs])
		}
		if good {
			copy(tb[loff+e.block*hbs:], b)
			return nil
		}
		s.refused.Add(1)
		if try == fetchRetries {
			return fmt.Errorf("delta: leaf blocks %d to %d do not match the tree after %d fetches", e.block, e.block+e.n-1, try+1)
		}
	}
}

// lazyRange is a payload fetched whole by range when first read, or
// read from what ReadAt kept.
type lazyRange struct {
	s      *Source
	off, n int64
	r      io.Reader
	kept   bool // r reads bytes fetched (and counted) already
	// ready, if set, is closed once assembler.fetchTail is done with it.
	ready chan struct{}
	// sum is the UKI's sha256 (hex), for the UKI.
	sum string
}

// bySection says whether l is a UKI to fetch by section (fetchUKI):
// there are UKIs on the device to take sections from.
func (l *lazyRange) bySection() bool { return l.sum != "" && len(l.s.o.UKIs) > 0 }

// fetch fetches the whole range at once, a UKI by section.
func (l *lazyRange) fetch() ([]byte, error) {
	if l.bySection() {
		return l.s.fetchUKI(l.off, l.n, l.sum)
	}
	b, _, err := l.s.fetchRange(l.off, l.n)
	if err == nil && int64(len(b)) != l.n {
		err = fmt.Errorf("fetching bytes %d to %d: got %d", l.off, l.off+l.n, len(b))
	}
	return b, err
}

func (l *lazyRange) Read(p []byte) (int, error) {
	if l.r == nil {
		if l.ready != nil {
			<-l.ready
		}
		if b := l.s.ahead.Take(l.off, l.n); b != nil {
			l.r, l.kept = bytes.NewReader(b), true
		} else if l.bySection() {
			b, err := l.fetch()
			if err != nil {
				return 0, err
			}
			l.r, l.kept = bytes.NewReader(b), true
		} else {
			l.s.requests.Add(1)
			r, err := fetch.OpenRange(l.s.ctx, l.s.url, l.off, l.n, l.s.o.Fetch)
			if err != nil {
				return 0, err
			}
			l.r = r
		}
	}
	n, err := l.r.Read(p)
	if !l.kept {
		l.s.fetched.Add(int64(n))
		if err == io.EOF {
			l.r.(io.Closer).Close()
		}
	}
	return n, err
}

// An extent is a run of new blocks that come from one place.
type extent struct {
	block, n int64 // new blocks [block, block+n)
	seed     int   // index into assembler.seeds; -1: fetched
	from     int64 // the seed's block for the first one
}

// seedIndex is a seed's blocks, indexed by their digest with the new
// tree's salt.
type seedIndex struct {
	Seed
	digests []byte // sha256.Size per block
	keys    index
}

// has says whether the seed's block j has the digest d.
func (ix *seedIndex) has(j int64, d []byte) bool {
	return j >= 0 && (j+1)*sha256.Size <= int64(len(ix.digests)) && bytes.Equal(ix.digests[j*sha256.Size:(j+1)*sha256.Size], d)
}

// seedTree is a seed's leaves, read from its tree, and their index.
type seedTree struct {
	leaves *verity.Leaves
	keys   index
}

// An index finds blocks by digest. Each entry is the first 8 bytes of a
// block's digest with its low bits replaced by the block's number, so
// that a sort of plain integers (several times faster than sorting
// pairs: 66,000 blocks take 15 ms that way on bench/delta's machine, the
// longest step of a plan) orders the entries by digest prefix, then by
// block. Blocks that share a prefix are told apart by their digests.
type index struct {
	entries []uint64
	mask    uint64 // the block number's bits
}

// newIndex indexes digests, sha256.Size bytes per block.
func newIndex(digests []byte) index {
	n := len(digests) / sha256.Size
	x := index{entries: make([]uint64, n), mask: 1<<bits.Len64(uint64(n)) - 1}
	for j := range x.entries {
		x.entries[j] = binary.BigEndian.Uint64(digests[j*sha256.Size:])&^x.mask | uint64(j)
	}
	slices.Sort(x.entries)
	return x
}

// find calls f with each block whose digest may be d, lowest first,
// until f returns true.
func (x index) find(d []byte, f func(block int64) bool) {
	key := binary.BigEndian.Uint64(d) &^ x.mask
	e, _ := slices.BinarySearch(x.entries, key)
	for ; e < len(x.entries) && x.entries[e]&^x.mask == key; e++ {
		if f(int64(x.entries[e] & x.mask)) {
			return
		}
	}
}

// assembler yields the new root, block by block, each checked against
// its leaf.
type assembler struct {
	s      *Source
	leaves *verity.Leaves
	base   int64 // the root payload's offset in the bundle
	bs     int64
	seeds  []*seedIndex
	exts   []extent

	fetched int // the checker's: fetched ranges consumed

	ranges   []chan chunk  // one per range to fetch, in plan order
	tokens   chan struct{} // the fetch buffer's bytes, in tokenBytes
	out      chan chunk    // checked blocks
	free     chan []byte   // seed chunks' buffers, to be reused
	made     int           // the seed reader's: buffers allocated so far
	buf      []byte        // the reader's: checked bytes not yet read
	bufChunk chunk         // what buf is part of, to free once read
	quit     chan struct{}
	stopOnce sync.Once

	// tail is the UKI, when it comes after the root (fetchTail);
	// tailing says fetchTail was started.
	tail    *lazyRange
	tailing bool
	// fetchedAll is closed once every planned range was fetched.
	fetchedAll chan struct{}

	// placed are the root's bytes checked in place in the target, as
	// sorted, disjoint [start, end) pairs; the checker appends them.
	placedMu sync.Mutex
	placed   [][2]int64
}

// chunk is bytes, or why there are none. pooled bytes are a buffer of
// assembler.free.
type chunk struct {
	b      []byte
	err    error
	pooled bool
}

// plan indexes the seeds and splits the new root into extents.
func (a *assembler) plan(seeds []Seed, trees []seedTree) error {
	for i, sd := range seeds {
		ix, how, err := a.index(sd, trees[i])
		if err != nil {
			// A seed is an optimisation: without it, more is fetched.
			a.s.log("step", "seed", "seed", sd.Name, "result", "error", "err", err)
			continue
		}
		a.s.log("step", "seed", "seed", sd.Name, "index", how, "blocks", len(ix.keys.entries))
		a.seeds = append(a.seeds, ix)
	}
	target := slices.IndexFunc(a.seeds, func(x *seedIndex) bool { return x.Target })
	n := a.leaves.Blocks()
	from := make([]source, n)
	for i := range n {
		// A block the target already holds in place needs no write, so
		// it is taken from there before any other seed is looked at.
		from[i] = source{target, i}
		if !a.atTarget(target, i) {
			if from[i] = a.next(from, i); from[i].seed < 0 {
				from[i] = a.lookup(i)
			}
		}
	}
	if target >= 0 {
		a.leftBehind(from, target)
	}
	for i, f := range from {
		a.add(int64(i), f.seed, f.block)
	}
	a.merge()
	var reuse, inPlace, fetch, requests int64
	for _, e := range a.exts {
		switch {
		case e.seed < 0:
			fetch += e.n
			requests++
		case a.inPlaceExtent(e):
			inPlace += e.n
			fallthrough
		default:
			reuse += e.n
		}
	}
	a.s.log("step", "plan", "mode", ModeDelta, "blocks", n, "reuse_bytes", reuse*a.bs, "in_place_bytes", inPlace*a.bs, "fetch_bytes", fetch*a.bs, "requests", requests, "elapsed_ms", time.Since(a.s.start).Milliseconds())
	return nil
}

// atTarget says whether the target seed's own tree, the index of what
// its partition held before this install, says it holds new block i in
// place. The block is checked when it is read, like any seed block.
func (a *assembler) atTarget(target int, i int64) bool {
	return target >= 0 && a.seeds[target].has(i, a.leaves.Digest(i))
}

// source is where a new block comes from: block of seed, or nowhere
// (seed -1: it is fetched).
type source struct {
	seed  int
	block int64
}

var nowhere = source{-1, 0}

// next returns where new block i is if it follows on from block i-1 in
// the same seed: the common case, since an update leaves most of an
// image where it was, found without a search.
func (a *assembler) next(from []source, i int64) source {
	if i == 0 || from[i-1].seed < 0 {
		return nowhere
	}
	k, j := from[i-1].seed, from[i-1].block+1
	if ix := a.seeds[k]; ix.Target && j < i || !ix.has(j, a.leaves.Digest(i)) {
		return nowhere
	}
	return source{k, j}
}

// leftBehind looks for the blocks no seed has in place in the target,
// where an interrupted install may have written them: one read per run
// of them, several runs read at once, since each costs a seek and a
// one-package update has about 130.
func (a *assembler) leftBehind(from []source, target int) {
	t := a.seeds[target]
	var wg sync.WaitGroup
	reads := make(chan struct{}, leftBehindReads)
	n := int64(len(from))
	for i := int64(0); i < n; {
		if from[i].seed >= 0 {
			i++
			continue
		}
		start := i
		for i < n && from[i].seed < 0 && i-start < seedChunk {
			i++
		}
		end := min(i, t.Size/a.bs)
		if end <= start {
			continue
		}
		reads <- struct{}{}
		wg.Go(func() {
			defer func() { <-reads }()
			have := make([]byte, (end-start)*a.bs)
			if readFull(t.Data, have, start*a.bs) != nil {
				return
			}
			for b := start; b < end; b++ {
				if a.leaves.Check(b, have[(b-start)*a.bs:(b-start+1)*a.bs]) {
					from[b] = source{target, b}
				}
			}
		})
	}
	wg.Wait()
}

// index takes a seed's digests and their index from its tree t, if it
// has one with the new tree's salt, or computes them.
func (a *assembler) index(sd Seed, t seedTree) (*seedIndex, string, error) {
	ix := &seedIndex{Seed: sd}
	how := "tree"
	if l := t.leaves; l != nil && bytes.Equal(l.Salt, a.leaves.Salt) && int64(l.BlockSize) == a.bs && l.Blocks()*a.bs <= sd.Size {
		ix.digests, ix.keys = l.Digests, t.keys
		return ix, how, nil
	}
	if sd.Target {
		// Hashing it costs a full read, for what is usually an older
		// root or nothing; only its blocks in place are looked at.
		return ix, "none", nil
	}
	how = "data"
	n := sd.Size / a.bs
	ix.digests = make([]byte, 0, n*sha256.Size)
	buf := make([]byte, 256*a.bs)
	for off := int64(0); off < n*a.bs; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), n*a.bs-off)]
		if err := readFull(sd.Data, b, off); err != nil {
			return nil, "", fmt.Errorf("reading seed %s: %w", sd.Name, err)
		}
		for len(b) > 0 {
			d := a.leaves.Sum(b[:a.bs])
			ix.digests = append(ix.digests, d[:]...)
			b = b[a.bs:]
		}
	}
	ix.keys = newIndex(ix.digests)
	return ix, how, nil
}

// lookup finds new block i in the seeds, the first seed first.
func (a *assembler) lookup(i int64) source {
	d := a.leaves.Digest(i)
	for k, ix := range a.seeds {
		found := int64(-1)
		ix.keys.find(d, func(j int64) bool {
			// The target's blocks before i are overwritten by then.
			if (!ix.Target || j >= i) && ix.has(j, d) {
				found = j
			}
			return found >= 0
		})
		if found >= 0 {
			return source{k, found}
		}
	}
	return nowhere
}

// add appends new block i, from seed k's block j (k < 0: fetched).
func (a *assembler) add(i int64, k int, j int64) {
	if len(a.exts) > 0 {
		e := &a.exts[len(a.exts)-1]
		if e.seed == k && (k < 0 && e.n*a.bs < a.s.o.MaxRange || k >= 0 && e.from+e.n == j) {
			e.n++
			return
		}
	}
	a.exts = append(a.exts, extent{block: i, n: 1, seed: k, from: j})
}

// merge joins runs to fetch that at most Options.Gap blocks apart, and
// not longer than Options.MaxRange together, fetching the blocks between.
func (a *assembler) merge() {
	var out []extent
	for _, e := range a.exts {
		if e.seed < 0 {
			// The last fetched run, if only short seed runs follow it.
			last := len(out) - 1
			for last >= 0 && out[last].seed >= 0 {
				last--
			}
			if last >= 0 {
				p := out[last]
				if gap := e.block - (p.block + p.n); gap <= int64(a.s.o.Gap) && (e.block+e.n-p.block)*a.bs <= a.s.o.MaxRange {
					out = out[:last]
					e = extent{block: p.block, n: e.block + e.n - p.block, seed: -1}
				}
			}
		}
		out = append(out, e)
	}
	a.exts = out
}

// start starts three stages that run ahead of the reader, so that the
// network, the seeds' reads and the hashing overlap: the fetcher fetches
// the planned ranges, up to prefetch at a time and in plan order; the
// seed reader reads the seeds' runs a chunk at a time, up to
// readAhead chunks ahead; the checker checks each chunk, copied or
// fetched, against its leaves and hands it to Read.
func (a *assembler) start() {
	a.quit, a.out = make(chan struct{}), make(chan chunk, 2)
	var fetches []extent
	for _, e := range a.exts {
		if e.seed < 0 {
			fetches = append(fetches, e)
		}
	}
	a.ranges = make([]chan chunk, len(fetches))
	for k := range a.ranges {
		a.ranges[k] = make(chan chunk, 1)
	}
	a.tokens = make(chan struct{}, fetchBuffer/tokenBytes)
	inflight := make(chan struct{}, prefetch)
	a.fetchedAll = make(chan struct{})
	go func() {
		var fetching sync.WaitGroup
		for k, e := range fetches {
			for range a.need(e) {
				select {
				case a.tokens <- struct{}{}:
				case <-a.quit:
					return
				}
			}
			select {
			case inflight <- struct{}{}:
			case <-a.quit:
				return
			}
			fetching.Go(func() {
				b, _, err := a.s.fetchRange(a.base+e.block*a.bs, e.n*a.bs)
				<-inflight
				a.ranges[k] <- chunk{b: b, err: err}
			})
		}
		fetching.Wait()
		close(a.fetchedAll)
	}()
	read := make(chan unit, readAhead)
	// A buffer is in the seed reader's hands, in read, with the checker,
	// in out or being read.
	a.free = make(chan []byte, readAhead+4)
	go func() {
		defer close(read)
		for _, e := range a.exts {
			for done := int64(0); done < e.n; {
				u := unit{extent: e, block: e.block + done, n: e.n}
				if e.seed >= 0 {
					u.n = min(seedChunk, e.n-done)
					if u.b = a.buffer(); u.b == nil {
						return
					}
					u.b = u.b[:u.n*a.bs]
					u.err = readFull(a.seeds[e.seed].Data, u.b, (e.from+done)*a.bs)
				}
				done += u.n
				select {
				case read <- u:
				case <-a.quit:
					return
				}
			}
		}
	}()
	go func() {
		for u := range read {
			c := a.check(u)
			select {
			case a.out <- c:
			case <-a.quit:
				return
			}
			if c.err != nil {
				return
			}
		}
		close(a.out)
	}()
}

// buffer returns a buffer for a seed chunk, nil once stopped: a free one,
// or a new one while fewer than cap(a.free) exist. They are made as they
// are needed: making all seven (28 MiB) at the start held the first
// block back by ~9 ms on bench/delta's machine, and a reader that keeps
// up needs only a few. Only the seed reader calls it.
func (a *assembler) buffer() []byte {
	select {
	case b := <-a.free:
		return b
	default:
	}
	if a.made < cap(a.free) {
		a.made++
		return make([]byte, seedChunk*a.bs)
	}
	select {
	case b := <-a.free:
		return b
	case <-a.quit:
		return nil
	}
}

// need is how many of the fetch buffer's tokens range e takes: all of
// them at most, so that a range larger than the buffer is fetched alone.
func (a *assembler) need(e extent) int {
	return int(min((e.n*a.bs+tokenBytes-1)/tokenBytes, int64(cap(a.tokens))))
}

// stop ends the fetching and producing; it is safe to call more than
// once and from any goroutine.
func (a *assembler) stop() {
	a.stopOnce.Do(func() { close(a.quit) })
}

// seedChunk is how many blocks are read from a seed at a time, and
// readAhead how many such chunks may wait to be checked.
const (
	seedChunk = 1024
	readAhead = 3
)

// leftBehindReads is how many runs leftBehind reads at once.
const leftBehindReads = 8

// A unit is new blocks [block, block+n) of extent: read from its seed
// into b (or why not), or to be fetched.
type unit struct {
	extent
	block, n int64
	b        []byte
	err      error
}

func (a *assembler) Read(p []byte) (int, error) {
	if a.tail != nil && !a.tailing {
		a.tailing, a.tail.ready = true, make(chan struct{})
		go a.fetchTail()
	}
	for len(a.buf) == 0 {
		if a.bufChunk.pooled {
			a.free <- a.bufChunk.b[:cap(a.bufChunk.b)]
			a.bufChunk = chunk{}
		}
		c, ok := <-a.out
		switch {
		case !ok:
			return 0, io.EOF
		case c.err != nil:
			a.stop()
			return 0, c.err
		}
		a.buf, a.bufChunk = c.b, c
	}
	n := copy(p, a.buf)
	a.buf = a.buf[n:]
	return n, nil
}

// fetchTail fetches the UKI into the Source's read-ahead (fetch.Ahead)
// once the root's ranges are all fetched, so that it comes over the
// network while the root is still being written, not after it: a delta
// install is mostly disk work, a full one's UKI is a small part of its
// download. It starts at the root's first Read, which comes after any
// ReadAt of the installer: a UKI read ahead already (Secure Boot) is not
// fetched again.
func (a *assembler) fetchTail() {
	l := a.tail
	defer close(l.ready)
	select {
	case <-a.fetchedAll:
	case <-a.quit:
		return
	}
	if a.s.ahead.Has(l.off, l.n) {
		return
	}
	// An error is met again, and reported, when the stream gets there.
	if b, err := l.fetch(); err == nil {
		a.s.ahead.Keep(l.off, b)
	}
}

// check returns u's blocks once each matches its leaf: a fetched range
// that does not is fetched again, a seed block that does not is fetched
// instead.
func (a *assembler) check(u unit) chunk {
	if u.seed < 0 {
		f := <-a.ranges[a.fetched]
		a.fetched++
		for range a.need(u.extent) {
			<-a.tokens
		}
		if f.err != nil {
			return chunk{err: fmt.Errorf("fetching root blocks %d to %d: %w", u.block, u.block+u.n-1, f.err)}
		}
		b, err := a.checked(u.block, u.n, f.b)
		return chunk{b: b, err: err}
	}
	sd := a.seeds[u.seed]
	if u.err != nil {
		// Unreadable: fetch these blocks instead, in one range.
		a.s.log("step", "seed", "seed", sd.Name, "result", "error", "err", u.err, "action", "fetch")
		a.s.misses.Add(u.n)
		a.free <- u.b[:cap(u.b)]
		b, err := a.checked(u.block, u.n, nil)
		return chunk{b: b, err: err}
	}
	bad := a.bad(u.block, u.n, u.b)
	a.s.reused.Add((u.n - int64(len(bad))) * a.bs)
	if a.inPlaceExtent(u.extent) {
		a.place(u.block, u.n, bad)
	}
	for _, c := range bad {
		i := u.block + c
		a.s.misses.Add(1)
		a.s.log("step", "seed", "seed", sd.Name, "block", u.from+(i-u.extent.block), "result", "mismatch", "action", "fetch")
		got, err := a.checked(i, 1, nil)
		if err != nil {
			a.free <- u.b[:cap(u.b)]
			return chunk{err: err}
		}
		copy(u.b[c*a.bs:], got)
	}
	return chunk{b: u.b, pooled: true}
}

// inPlaceExtent says whether e comes from where it goes: the target, at
// the same blocks.
func (a *assembler) inPlaceExtent(e extent) bool {
	return e.seed >= 0 && a.seeds[e.seed].Target && e.from == e.block
}

// place records new blocks [i, i+n), but for those at the offsets bad, as
// checked in place in the target.
func (a *assembler) place(i, n int64, bad []int64) {
	a.placedMu.Lock()
	defer a.placedMu.Unlock()
	from := int64(0)
	for _, c := range append(bad, n) {
		if c > from {
			start, end := (i+from)*a.bs, (i+c)*a.bs
			if k := len(a.placed) - 1; k >= 0 && a.placed[k][1] == start {
				a.placed[k][1] = end
			} else {
				a.placed = append(a.placed, [2]int64{start, end})
			}
			a.s.inPlace.Add(end - start)
		}
		from = c + 1
	}
}

// inPlace is Source.InPlace.
func (a *assembler) inPlace(off int64) (bool, int64) {
	a.placedMu.Lock()
	defer a.placedMu.Unlock()
	k, _ := slices.BinarySearchFunc(a.placed, off, func(p [2]int64, off int64) int { return cmp.Compare(p[1], off+1) })
	switch {
	case k == len(a.placed):
		return false, math.MaxInt64
	case a.placed[k][0] <= off:
		return true, a.placed[k][1] - off
	default:
		return false, a.placed[k][0] - off
	}
}

// checked returns blocks [i, i+n) from b, fetched, once they all match
// their leaves; a range that does not match is fetched again, up to
// fetchRetries times. b nil fetches them first.
func (a *assembler) checked(i, n int64, b []byte) ([]byte, error) {
	for try := 0; ; try++ {
		if b != nil {
			bad := []int64{int64(len(b)) / a.bs}
			if int64(len(b)) == n*a.bs {
				bad = a.bad(i, n, b)
			}
			if len(bad) == 0 {
				return b, nil
			}
			a.s.refused.Add(1)
			a.s.log("step", "fetch", "block", i+bad[0], "result", "mismatch", "try", try)
			if try == fetchRetries {
				return nil, fmt.Errorf("delta: root block %d does not match its hash after %d fetches", i+bad[0], try+1)
			}
		}
		var err error
		if b, _, err = a.s.fetchRange(a.base+i*a.bs, n*a.bs); err != nil {
			return nil, fmt.Errorf("fetching root blocks %d to %d: %w", i, i+n-1, err)
		}
	}
}

// checkSpan is the fewest blocks a checker goroutine takes on: below
// that, starting one costs more than the hashing it shares.
const checkSpan = 64

// bad returns the blocks of b, new blocks [i, i+n), that do not match
// their leaves, in order, as offsets from i. The leaves are checked by
// as many goroutines as there are CPUs: unlike a payload's one sha256,
// the blocks' digests are independent, and hashing them is most of the
// work of a delta install (every block the seeds give is hashed once,
// as a full install hashes the payload it reads).
func (a *assembler) bad(i, n int64, b []byte) []int64 {
	workers := min(int64(runtime.GOMAXPROCS(0)), (n+checkSpan-1)/checkSpan)
	per := (n + workers - 1) / workers
	found := make([][]int64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for c := w * per; c < min((w+1)*per, n); c++ {
				if !a.leaves.Check(i+c, b[c*a.bs:(c+1)*a.bs]) {
					found[w] = append(found[w], c)
				}
			}
		})
	}
	wg.Wait()
	return slices.Concat(found...)
}

// readFull fills b from r at off.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		return fmt.Errorf("short read at %d: %d of %d bytes", off, n, len(b))
	}
	return err
}
