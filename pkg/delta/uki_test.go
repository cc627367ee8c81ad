package delta

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/abboot/abboot/pkg/uki"
)

// buildUKI builds a UKI of kernel and initrd with systemd's stub (Debian
// systemd-boot-efi), as mkuimage.sh does.
func buildUKI(t *testing.T, kernel, initrd []byte, cmdline, version string) []byte {
	t.Helper()
	if _, err := os.Stat(uki.DefaultStub); err != nil {
		t.Skipf("no UEFI stub: %v (apt-get install systemd-boot-efi)", err)
	}
	dir := t.TempDir()
	k, i, out := filepath.Join(dir, "kernel"), filepath.Join(dir, "initrd"), filepath.Join(dir, "uki.efi")
	os.WriteFile(k, kernel, 0o644)
	os.WriteFile(i, initrd, 0o644)
	if err := uki.Build(uki.Spec{Kernel: k, Initrd: i, Cmdline: cmdline, OSRel: "VERSION_ID=" + version + "\n"}, out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestUKISections: the new UKI's kernel and initrd are taken from a UKI
// already on the device with the same sections (the root changed, the
// kernel did not), the rest is fetched; a section of the same name and
// size but other bytes is fetched after all, and in every case the
// source yields the bundle's UKI exactly, read in the stream or ahead
// (Secure Boot's check).
func TestUKISections(t *testing.T) {
	d1, d2 := versions(t, 1024)
	v1, v2 := makeImage(t, d1, salt), makeImage(t, d2, salt)
	kernel, initrd := randomBytes(600<<10), randomBytes(300<<10)
	newUKI := buildUKI(t, kernel, initrd, "abboot.roothash="+v2.root, "2")
	b := makeBundleUKI(t, v2, newUKI)
	ukiStart := int64(len(b) - len(newUKI))
	same := buildUKI(t, kernel, initrd, "abboot.roothash="+v1.root, "1")
	otherKernel := buildUKI(t, randomBytes(len(kernel)), initrd, "abboot.roothash="+v1.root, "1")
	// The Debian image's initramfs differs from one version to the next
	// in 2 bytes of its first KiB.
	oldInitrd := bytes.Clone(initrd)
	oldInitrd[948] ^= 1
	versionInInitrd := buildUKI(t, kernel, oldInitrd, "abboot.roothash="+v1.root, "1")
	n := int64(len(newUKI))
	both := int64(len(kernel)+len(initrd)) - 4*ukiEnds
	for _, tc := range []struct {
		name    string
		ukis    [][]byte
		peek    bool
		fetched int64 // UKI bytes served, at most
		reused  int64 // UKI bytes taken, at least
	}{
		{name: "no UKI on the device", fetched: n},
		{name: "same kernel and initrd", ukis: [][]byte{same}, fetched: n / 4, reused: both},
		{name: "same, read ahead", ukis: [][]byte{same}, peek: true, fetched: n / 4, reused: both},
		{name: "not a UKI, then the same", ukis: [][]byte{[]byte("not a PE image"), same}, fetched: n / 4, reused: both},
		{name: "initramfs changed at its start", ukis: [][]byte{versionInInitrd}, fetched: n / 4, reused: both},
		// The kernel is guessed wrong: fetched again; the initrd is
		// not, but the one digest cannot tell: fetched again too.
		{name: "another kernel of the same size", ukis: [][]byte{otherKernel}, fetched: 2 * n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &server{content: b}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			var ukis []io.ReaderAt
			for _, u := range tc.ukis {
				ukis = append(ukis, bytes.NewReader(u))
			}
			var got []byte
			var st Stats
			var err error
			if tc.peek {
				got, st, err = peekThenRead(t, hs.URL, []Seed{seed("a", v1)}, ukis)
			} else {
				got, st, _, err = install(t, hs.URL, []Seed{seed("a", v1)}, ukis...)
			}
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("the source yielded %d bytes, not the bundle's %d: %v", len(got), len(b), err)
			}
			var served int64
			for _, s := range srv.served {
				served += max(0, s[1]-max(s[0], ukiStart))
			}
			rootReused := int64(len(d2)) - 16*bs // versions changes 16 blocks
			if served > tc.fetched || st.Reused-rootReused < tc.reused {
				t.Errorf("%d UKI bytes served, %d reused; want at most %d served, %d reused", served, st.Reused-rootReused, tc.fetched, tc.reused)
			}
		})
	}
}

// peekThenRead reads the bundle at url as an installer under Secure Boot
// does: the UKI ahead of the stream, by ReadAt, then the stream.
func peekThenRead(t *testing.T, url string, seeds []Seed, ukis []io.ReaderAt) ([]byte, Stats, error) {
	t.Helper()
	src, err := Open(t.Context(), url, Options{UKIs: ukis})
	if err != nil {
		return nil, Stats{}, err
	}
	defer src.Close()
	var out bytes.Buffer
	r, err := newReader(io.TeeReader(src, &out))
	if err != nil {
		return nil, Stats{}, err
	}
	if err := src.Plan(r, seeds); err != nil {
		return nil, Stats{}, err
	}
	if _, err := r.PeekUKI(src); err != nil {
		return nil, Stats{}, err
	}
	err = drain(r)
	return out.Bytes(), src.Stats(), err
}

// FuzzBigSections: whatever a UKI's headers say, the sections to take
// lie past them, inside the UKI, in order and apart, and with what lies
// between them they cover the rest of it exactly once.
func FuzzBigSections(f *testing.F) {
	kernel, initrd := randomBytes(100<<10), randomBytes(70<<10)
	if _, err := os.Stat(uki.DefaultStub); err == nil {
		dir := f.TempDir()
		k, i, out := filepath.Join(dir, "kernel"), filepath.Join(dir, "initrd"), filepath.Join(dir, "uki.efi")
		os.WriteFile(k, kernel, 0o644)
		os.WriteFile(i, initrd, 0o644)
		if err := uki.Build(uki.Spec{Kernel: k, Initrd: i, Cmdline: "x"}, out); err == nil {
			b, _ := os.ReadFile(out)
			f.Add(b[:ukiHeaderFetch], int64(len(b)))
		}
	}
	f.Add([]byte("MZ"), int64(1<<20))
	f.Fuzz(func(t *testing.T, hdr []byte, n int64) {
		if n < int64(len(hdr)) || n > 1<<40 {
			return
		}
		var ranges [][2]int64
		for _, sec := range bigSections(hdr, n) {
			r := [2]int64{int64(sec.Offset), int64(sec.Offset) + int64(sec.Size)}
			if r[0] < int64(len(hdr)) || r[1] > n || r[1]-r[0] < minSectionTake {
				t.Fatalf("section %q at %v of a %d-byte UKI with %d bytes of headers", sec.Name, r, n, len(hdr))
			}
			if k := len(ranges); k > 0 && ranges[k-1][1] > r[0] {
				t.Fatalf("section %q at %v overlaps %v", sec.Name, r, ranges[k-1])
			}
			ranges = append(ranges, r)
		}
		all := append(between(ranges, int64(len(hdr)), n), ranges...)
		slices.SortFunc(all, func(x, y [2]int64) int { return cmp.Compare(x[0], y[0]) })
		at := int64(len(hdr))
		for _, r := range all {
			if r[0] != at || r[1] <= r[0] {
				t.Fatalf("ranges %v do not cover [%d, %d) once", all, len(hdr), n)
			}
			at = r[1]
		}
		if at != n && len(all) > 0 || len(all) == 0 && n != int64(len(hdr)) {
			t.Fatalf("ranges %v do not cover [%d, %d)", all, len(hdr), n)
		}
	})
}
