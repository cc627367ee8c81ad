package delta

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/abboot/abboot/internal/testutil"
	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/fetch"
	"github.com/abboot/abboot/pkg/verity"
)

const bs = verity.DefaultBlockSize

var (
	key  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	salt = []byte("abboot delta test salt, per product")
)

// image is a root image and its tree.
type image struct {
	data, tree []byte
	root       string
}

func makeImage(t testing.TB, data []byte, salt []byte) image {
	t.Helper()
	h := &testutil.MemFile{}
	root, err := verity.Format(bytes.NewReader(data), int64(len(data)), h, verity.Params{Salt: salt})
	if err != nil {
		t.Fatal(err)
	}
	return image{data, h.B, hex.EncodeToString(root)}
}

// versions returns two images of n blocks: v2 is v1 with a few runs of
// blocks changed, as a package update changes an erofs image.
func versions(t testing.TB, n int) (v1, v2 []byte) {
	rng := rand.New(rand.NewChaCha8([32]byte{3}))
	v1 = make([]byte, n*bs)
	for i := range v1 {
		v1[i] = byte(rng.Uint32())
	}
	clear(v1[(n-20)*bs:]) // free space
	v2 = bytes.Clone(v1)
	for _, run := range [][2]int{{100, 110}, {500, 501}, {n - 40, n - 35}} {
		for i := run[0] * bs; i < run[1]*bs; i++ {
			v2[i] = byte(rng.Uint32())
		}
	}
	return v1, v2
}

// makeBundle bundles img with a UKI.
func makeBundle(t testing.TB, img image) []byte {
	return makeBundleUKI(t, img, bytes.Repeat([]byte("uki"), 5000))
}

// makeBundleUKI bundles img with the UKI uki.
func makeBundleUKI(t testing.TB, img image, uki []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{}
	for name, b := range map[string][]byte{bundle.PayloadRoot: img.data, bundle.PayloadVerity: img.tree, bundle.PayloadUKI: uki} {
		files[name] = filepath.Join(dir, name)
		if err := os.WriteFile(files[name], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.Write(&buf, bundle.Manifest{Version: "2", Compatible: "abboot-test", RootHash: img.root}, files, key); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// misbehaviour is how a server departs from RFC 9110.
type misbehaviour struct {
	noRange bool
	cut     int   // cut every response after this many bytes (0: never)
	bad     int64 // a byte that is served wrong...
	badLeft int   // ...this many times
}

// server serves a bundle by range, or misbehaves as told.
type server struct {
	content []byte
	misbehaviour

	mu       sync.Mutex
	requests int
	served   [][2]int64 // the byte ranges served
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	var a, b int64
	_, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b)
	body := s.content
	if s.noRange || err != nil {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	} else {
		b = min(b, int64(len(s.content))-1)
		body = bytes.Clone(s.content[a : b+1])
		if s.bad >= a && s.bad <= b && s.badLeft > 0 {
			s.badLeft--
			body[s.bad-a] ^= 0xff
		}
		s.served = append(s.served, [2]int64{a, b + 1})
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(s.content)))
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusPartialContent)
	}
	cut := s.cut
	s.mu.Unlock()
	if cut == 0 || cut >= len(body) {
		w.Write(body)
		return
	}
	w.Write(body[:cut])
	w.(http.Flusher).Flush()
	c, _, _ := w.(http.Hijacker).Hijack()
	c.Close()
}

// install reads the bundle at url through a Source seeded with seeds and
// returns what it yielded, its stats, and the runs of the root it says
// are in place, as [start, end) byte offsets.
func install(t *testing.T, url string, seeds []Seed, ukis ...io.ReaderAt) ([]byte, Stats, [][2]int64, error) {
	t.Helper()
	src, err := Open(context.Background(), url, Options{Fetch: fetch.Options{Backoff: time.Millisecond}, Log: func(name string, kv ...any) { t.Log(name, kv) }, UKIs: ukis})
	if err != nil {
		return nil, Stats{}, nil, err
	}
	defer src.Close()
	var out bytes.Buffer
	r, err := newReader(io.TeeReader(src, &out))
	if err != nil {
		return nil, Stats{}, nil, err
	}
	if err := src.Plan(r, seeds); err != nil {
		return out.Bytes(), src.Stats(), nil, err
	}
	if err := drain(r); err != nil {
		return out.Bytes(), src.Stats(), nil, err
	}
	var placed [][2]int64
	size := r.Manifest.Payloads[slices.IndexFunc(r.Manifest.Payloads, isPayload(bundle.PayloadRoot))].Size
	for off := int64(0); off < size; {
		ok, n := src.InPlace(off)
		n = min(n, size-off)
		if n <= 0 {
			t.Fatalf("InPlace(%d) = %v, %d", off, ok, n)
		}
		if ok {
			placed = append(placed, [2]int64{off, off + n})
		}
		off += n
	}
	return out.Bytes(), src.Stats(), placed, nil
}

// newReader reads a bundle's header from src, signed by the test key.
func newReader(src io.Reader) (*bundle.Reader, error) {
	return bundle.NewReader(src, bundle.Keyring{key.Public().(ed25519.PublicKey)}, nil)
}

// drain reads every payload of r to its end.
func drain(r *bundle.Reader) error {
	for {
		_, p, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err == nil {
			_, err = io.Copy(io.Discard, p)
		}
		if err != nil {
			return err
		}
	}
}

func seed(name string, img image) Seed {
	return Seed{Name: name, Data: bytes.NewReader(img.data), Size: int64(len(img.data)), Hash: bytes.NewReader(img.tree), HashSize: int64(len(img.tree))}
}

func TestDelta(t *testing.T) {
	const n = 2048
	d1, d2 := versions(t, n)
	v1, v2 := makeImage(t, d1, salt), makeImage(t, d2, salt)
	b := makeBundle(t, v2)
	rootOff := int64(bytes.Index(b, d2[:bs]))
	// The blocks that changed: 10 + 1 + 5, fetched in three requests.
	changed := int64(16 * bs)

	corrupt := bytes.Clone(d1)
	corrupt[7*bs+5] ^= 1
	half := bytes.Clone(d1) // an install of v2 cut half way
	copy(half, d2[:n/2*bs])
	otherSalt := makeImage(t, d1, []byte("another salt"))
	// The tree: superblock, one block of level 1, 16 leaf blocks of
	// which 0 and 3 (merged into one request with 1 and 2) and 15 cover
	// changed blocks.
	treeOff := int64(bytes.Index(b, v2.tree))
	leafOff := treeOff + 2*bs
	full, delta := int64(len(v2.tree)), int64(2*bs+5*bs)
	empty := Seed{Name: "empty", Data: bytes.NewReader(nil)}
	// The target slot, holding data under the tree of v1.
	target := func(data []byte) Seed {
		s := seed("b", image{data, v1.tree, v1.root})
		s.Target = true
		return s
	}

	for _, tc := range []struct {
		name   string
		srv    misbehaviour
		seeds  []Seed
		mode   Mode
		reused int64 // root bytes copied
		// inPlace is how many of them the target held in place.
		inPlace int64
		root    int64 // root bytes fetched, at most
		tree    int64 // tree bytes fetched, at most
		misses  int64
		refuse  bool // some fetched block was refused
		fail    bool
		// requests, if not 0, bounds the requests served.
		requests int
	}{
		{name: "delta", seeds: []Seed{seed("a", v1)}, mode: ModeDelta, reused: n*bs - changed, root: changed, tree: delta},
		{name: "no seed", seeds: []Seed{empty}, mode: ModeDelta, root: n * bs, tree: full},
		{name: "seed of another salt", seeds: []Seed{seed("a", otherSalt)}, mode: ModeDelta, reused: n*bs - changed, root: changed, tree: full},
		{name: "no range support", srv: misbehaviour{noRange: true}, seeds: []Seed{seed("a", v1)}, mode: ModeFull, root: n * bs, tree: full},
		{name: "corrupt seed block", seeds: []Seed{seed("a", image{corrupt, v1.tree, v1.root})}, mode: ModeDelta, reused: n*bs - changed - bs, root: changed + bs, tree: delta, misses: 1},
		{name: "corrupt seed, another has it", seeds: []Seed{seed("a", image{corrupt, v1.tree, v1.root}), seed("b", v2)}, mode: ModeDelta, reused: n*bs - bs, root: bs, tree: 2 * bs, misses: 1},
		{name: "wrong bytes once", srv: misbehaviour{bad: rootOff + 100*bs + 77, badLeft: 1}, seeds: []Seed{seed("a", v1)}, mode: ModeDelta, reused: n*bs - changed, root: changed + 10*bs, tree: delta, refuse: true},
		{name: "wrong leaf bytes once", srv: misbehaviour{bad: leafOff + 3*bs + 5, badLeft: 1}, seeds: []Seed{seed("a", v1)}, mode: ModeDelta, reused: n*bs - changed, root: changed, tree: delta + 4*bs, refuse: true},
		{name: "wrong leaf bytes always", srv: misbehaviour{bad: leafOff + 3*bs + 5, badLeft: 100}, seeds: []Seed{seed("a", v1)}, mode: ModeRanges, fail: true},
		{name: "wrong bytes always", srv: misbehaviour{bad: rootOff + 500*bs, badLeft: 100}, seeds: []Seed{seed("a", v1)}, mode: ModeDelta, refuse: true, fail: true},
		// The seed's tree says what it has, its data cannot be read
		// (a disk error, or a closed file): whole chunks are fetched.
		{name: "unreadable seed", seeds: []Seed{{Name: "a", Data: unreadable{}, Size: int64(len(d1)), Hash: bytes.NewReader(v1.tree), HashSize: int64(len(v1.tree))}}, mode: ModeDelta, root: n * bs, tree: delta, misses: n - changed/bs, requests: 40},
		{name: "cut connections", srv: misbehaviour{cut: 5000}, seeds: []Seed{seed("a", v1)}, mode: ModeDelta, reused: n*bs - changed, root: changed, tree: delta},
		// The changed blocks of the first half are found where the
		// first install wrote them, the others where v1 had them.
		{name: "resume into a half-written target", seeds: []Seed{seed("a", v1), target(half)}, mode: ModeDelta, reused: n*bs - 5*bs, inPlace: n*bs - 5*bs, root: 5 * bs, tree: delta},
		// The target holds the version before: what did not change
		// is in place.
		{name: "target holds v1", seeds: []Seed{seed("a", v1), target(d1)}, mode: ModeDelta, reused: n*bs - changed, inPlace: n*bs - changed, root: changed, tree: delta},
		{name: "target holds v1 only", seeds: []Seed{target(d1)}, mode: ModeDelta, reused: n*bs - changed, inPlace: n*bs - changed, root: changed, tree: delta},
		// Its tree says block 7 is in place, its data differs: the
		// block is fetched, and not in place.
		{name: "corrupt target block", seeds: []Seed{seed("a", v1), target(corrupt)}, mode: ModeDelta, reused: n*bs - changed - bs, inPlace: n*bs - changed - bs, root: changed + bs, tree: delta, misses: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &server{content: b, misbehaviour: tc.srv}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			got, st, placed, err := install(t, hs.URL, tc.seeds)
			t.Logf("stats %+v, %d requests served", st, srv.requests)
			// Whatever happens, what came through is the bundle: no
			// block that did not match its leaf was ever handed on.
			if !bytes.HasPrefix(b, got) {
				t.Fatalf("the source yielded %d bytes that are not the bundle's", len(got))
			}
			if tc.fail {
				if err == nil {
					t.Fatal("install succeeded")
				}
				if int64(len(got)) > rootOff+500*bs {
					t.Errorf("the source yielded %d bytes, past the bad block at %d", len(got), rootOff+500*bs)
				}
			} else if err != nil || len(got) != len(b) {
				t.Fatalf("install: %v after %d of %d bytes", err, len(got), len(b))
			}
			if st.Mode != tc.mode {
				t.Errorf("mode %s, want %s", st.Mode, tc.mode)
			}
			if tc.fail {
				return
			}
			if st.Reused != tc.reused || st.InPlace != tc.inPlace {
				t.Errorf("reused %d bytes, %d in place; want %d, %d", st.Reused, st.InPlace, tc.reused, tc.inPlace)
			}
			// In place means the target has the new bytes there.
			var sum int64
			for _, p := range placed {
				sum += p[1] - p[0]
				sd := tc.seeds[slices.IndexFunc(tc.seeds, func(s Seed) bool { return s.Target })]
				have := make([]byte, p[1]-p[0])
				sd.Data.ReadAt(have, p[0])
				if !bytes.Equal(have, d2[p[0]:p[1]]) {
					t.Errorf("bytes %d to %d are said to be in place, the target has others", p[0], p[1])
				}
			}
			if sum != st.InPlace {
				t.Errorf("InPlace reports %d bytes in place, the stats %d", sum, st.InPlace)
			}
			// Fetched: the root blocks and the tree, plus the header
			// and the UKI.
			if extra := int64(len(b)) - int64(len(d2)) - int64(len(v2.tree)); st.Fetched > tc.root+tc.tree+extra+headerFetch {
				t.Errorf("fetched %d bytes, want at most %d of the root and %d of the tree", st.Fetched, tc.root, tc.tree)
			}
			if tc.requests > 0 && int(srv.requests) > tc.requests {
				t.Errorf("%d requests served, want at most %d", srv.requests, tc.requests)
			}
			if st.Misses != tc.misses || (st.Refused > 0) != tc.refuse {
				t.Errorf("%d seed misses and %d refused, want %d and refused %v", st.Misses, st.Refused, tc.misses, tc.refuse)
			}
		})
	}
}

// unreadable is a seed's data that cannot be read.
type unreadable struct{}

func (unreadable) ReadAt([]byte, int64) (int, error) { return 0, errors.New("read error") }

// TestMerge merges runs to fetch across short runs from seeds.
func TestMerge(t *testing.T) {
	a := &assembler{s: &Source{o: Options{Gap: 4, MaxRange: 10 * bs}}, bs: bs}
	// f: fetched, s: from a seed.
	for _, e := range []extent{
		{block: 0, n: 2, seed: -1},
		{block: 2, n: 4, seed: 0},  // gap 4: merged
		{block: 6, n: 1, seed: -1}, //
		{block: 7, n: 5, seed: 0},  // gap 5: kept
		{block: 12, n: 1, seed: -1},
		{block: 13, n: 1, seed: 0},
		{block: 14, n: 1, seed: -1}, // merged, 3 blocks
		{block: 15, n: 1, seed: 0},
		{block: 16, n: 8, seed: -1}, // 11 blocks: too long to merge
	} {
		a.exts = append(a.exts, e)
	}
	a.merge()
	want := []extent{{0, 7, -1, 0}, {7, 5, 0, 0}, {12, 3, -1, 0}, {15, 1, 0, 0}, {16, 8, -1, 0}}
	if fmt.Sprint(a.exts) != fmt.Sprint(want) {
		t.Errorf("merged %v, want %v", a.exts, want)
	}
}

// TestNotFound refuses a URL that is not there.
func TestNotFound(t *testing.T) {
	hs := httptest.NewServer(http.NotFoundHandler())
	defer hs.Close()
	if _, err := Open(context.Background(), hs.URL, Options{}); err == nil || errors.Is(err, fetch.ErrNoRange) {
		t.Errorf("Open = %v, want a plain error", err)
	}
}

// TestReadAheadOnce reads the UKI ahead, as an install under Secure Boot
// does (bundle.Reader.PeekUKI), then the whole bundle: the UKI's bytes
// are fetched once.
// TestReadAheadOnce checks that the UKI is fetched once: when the
// installer read it ahead (Secure Boot's check, PeekUKI), the stream
// takes it from there; when not, it is fetched while the root is still
// being read (fetchTail), before the stream gets to it.
func TestReadAheadOnce(t *testing.T) {
	d1, d2 := versions(t, 1024)
	v1, v2 := makeImage(t, d1, salt), makeImage(t, d2, salt)
	b := makeBundle(t, v2)
	for _, peek := range []bool{true, false} {
		t.Run(fmt.Sprintf("peek=%v", peek), func(t *testing.T) {
			srv := &server{content: b}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			src, err := Open(context.Background(), hs.URL, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			var out bytes.Buffer
			r, err := newReader(io.TeeReader(src, &out))
			if err != nil {
				t.Fatal(err)
			}
			if err := src.Plan(r, []Seed{seed("a", v1)}); err != nil {
				t.Fatal(err)
			}
			// The UKI is the bundle's last payload.
			ps := r.Manifest.Payloads
			ukiSize := ps[len(ps)-1].Size
			start := int64(len(b)) - ukiSize
			served := func() (n int64) {
				srv.mu.Lock()
				defer srv.mu.Unlock()
				for _, s := range srv.served {
					n += max(0, s[1]-max(s[0], start))
				}
				return n
			}
			if peek {
				if _, err := r.PeekUKI(src); err != nil {
					t.Fatal(err)
				}
			}
			for {
				p, pr, err := r.Next()
				if err == io.EOF {
					break
				}
				if err == nil {
					_, err = io.Copy(io.Discard, pr)
				}
				if err != nil {
					t.Fatal(err)
				}
				for deadline := time.Now().Add(time.Minute); p.Name == bundle.PayloadRoot && served() < ukiSize; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("the UKI was not fetched while the root was read")
					}
				}
			}
			if !bytes.Equal(out.Bytes(), b) {
				t.Fatal("the source did not yield the bundle")
			}
			if n := served(); n != ukiSize {
				t.Errorf("%d bytes of the %d-byte UKI served, want each once", n, ukiSize)
			}
			if st, want := src.Stats(), int64(len(b))-int64(len(d2))+16*bs; st.Fetched > want+headerFetch {
				t.Errorf("stats: %d bytes fetched, want at most %d", st.Fetched, want+headerFetch)
			}
		})
	}
}

// TestIndex finds the blocks whose digests share d's first bytes, the
// lowest first (the caller compares whole digests).
func TestIndex(t *testing.T) {
	d := func(prefix uint64, last byte) []byte {
		b := make([]byte, 32)
		binary.BigEndian.PutUint64(b, prefix<<32)
		b[31] = last
		return b
	}
	digests := slices.Concat(d(5, 1), d(7, 1), d(5, 2), d(1<<31, 1), d(5, 1), d(3, 9))
	x := newIndex(digests)
	for _, tc := range []struct {
		d    []byte
		want []int64 // the blocks find offers, in order
	}{
		{d(5, 1), []int64{0, 2, 4}},
		{d(7, 1), []int64{1}},
		{d(1<<31, 1), []int64{3}},
		{d(3, 0), []int64{5}},
		{d(4, 0), nil},
		{d(1<<32-1, 0), nil},
	} {
		var got []int64
		x.find(tc.d, func(j int64) bool { got = append(got, j); return false })
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("find(%x) offered %v, want %v", tc.d[:8], got, tc.want)
		}
	}
}
