package install

import (
	"bytes"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/abboot/abboot/internal/powercut"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/verity"
)

// TestDeltaPowerCut is the power-cut test of a delta install: version 2
// is version 1 (slot A's) with two blocks changed, under the same verity
// salt, fetched by range from an HTTP server and seeded from the slots.
// Cut after every write, the machine must boot as after a full install,
// and the next install must complete (rule 6 holds whatever the source).
func TestDeltaPowerCut(t *testing.T) {
	f := newFixture(t, true)
	sb, err := verity.ReadSuperblock(bytes.NewReader(f.v1.tree))
	if err != nil {
		t.Fatal(err)
	}
	root := bytes.Clone(f.v1.root)
	copy(root[3*verity.DefaultBlockSize:], random(verity.DefaultBlockSize))
	copy(root[11*verity.DefaultBlockSize:], random(100))
	v2 := makeVersion(t, f.key, "2", root, verity.Params{Salt: sb.Salt}, "")
	f.known[sum(v2.uki)] = v2.name

	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(countWriter{w, &served}, r, "", time.Time{}, bytes.NewReader(v2.bundle))
	}))
	defer srv.Close()
	f.urls = map[*version]string{v2: srv.URL}

	m := f.base.clone(t)
	if _, err := f.install(t, m, v2, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	if bad := f.installed(t, m, v2); len(bad) > 0 {
		t.Fatal(bad)
	}
	// The two changed blocks, the tree, the UKI and the header.
	if want := int64(len(v2.bundle) - len(root) + 2*verity.DefaultBlockSize + 4096); served.Load() > want {
		t.Errorf("the delta install fetched %d bytes, want at most %d", served.Load(), want)
	}

	tried, failed := f.cutInstall(t, v2, powercut.Modes)
	t.Logf("delta install: %d cut points tried, %d failed", tried, failed)
	if failed > 0 || tried < 10 {
		t.Errorf("delta install: %d of %d cut points failed", failed, tried)
	}
}

// TestDeltaInPlace is a second delta update into the same slot: slot B
// holds version 2 when version 3 (one more block changed) is installed
// there, so the blocks that did not change are in place. They are neither
// written nor read back; a block B's tree vouches for but whose data was
// corrupted on disk is fetched and written, like the changed one, and the
// slot is complete. Cut after every write, the machine must boot and the
// next install complete, as for any install (rule 6).
func TestDeltaInPlace(t *testing.T) {
	f := newFixture(t, true)
	sb, err := verity.ReadSuperblock(bytes.NewReader(f.v1.tree))
	if err != nil {
		t.Fatal(err)
	}
	const bs = verity.DefaultBlockSize
	changed := func(from *version, name string, block int) *version {
		root := bytes.Clone(from.root)
		copy(root[block*bs:], random(bs))
		v := makeVersion(t, f.key, name, root, verity.Params{Salt: sb.Salt}, "")
		f.known[sum(v.uki)] = v.name
		return v
	}
	v2 := changed(f.v1, "2", 3)
	v3 := changed(v2, "3", 11)
	f.urls = map[*version]string{}
	for _, v := range []*version{v2, v3} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(v.bundle))
		}))
		defer srv.Close()
		f.urls[v] = srv.URL
	}

	m := f.base.clone(t)
	// B holds version 0, under another salt: nothing is in place.
	if res, err := f.install(t, m, v2, nil, Options{}); err != nil || res.InPlace != 0 {
		t.Fatalf("installing version 2: %+v, %v; want nothing in place", res, err)
	}
	part, _ := m.partition(t, slot.B.RootLabel(), 0)
	start := part.Start(512)
	// Slot B as it is, for the power cuts below: an active slot that the
	// machine may boot must be complete.
	before := m.clone(t)
	corruptAt(t, m.disk, start+5*bs+100)
	written := map[int64]bool{}
	m.written = func(off, n int64) {
		for b := (off - start) / bs; b < (off-start+n+bs-1)/bs; b++ {
			if b >= 0 && b*bs < int64(len(v3.root)) {
				written[b] = true
			}
		}
	}
	res, err := f.install(t, m, v3, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(v3.root) - 2*bs); res.InPlace != want || res.Bytes < int64(len(v3.root)) {
		t.Errorf("installed %d bytes, %d in place; want %d in place", res.Bytes, res.InPlace, want)
	}
	if want := map[int64]bool{5: true, 11: true}; !maps.Equal(written, want) {
		t.Errorf("root blocks written: %v, want %v", written, want)
	}
	if bad := f.installed(t, m, v3); len(bad) > 0 {
		t.Fatal(bad)
	}

	f.base = before
	tried, failed := f.cutInstall(t, v3, powercut.Modes)
	t.Logf("delta install in place: %d cut points tried, %d failed", tried, failed)
	if failed > 0 || tried < 10 {
		t.Errorf("delta install in place: %d of %d cut points failed", failed, tried)
	}
}

// corruptAt flips a bit of the file at off.
func corruptAt(t *testing.T, path string, off int64) {
	t.Helper()
	fl, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	b := make([]byte, 1)
	if _, err := fl.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := fl.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

type countWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countWriter) Write(b []byte) (int, error) {
	w.n.Add(int64(len(b)))
	return w.ResponseWriter.Write(b)
}
