package install

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/abboot/abboot/internal/powercut"
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

type countWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countWriter) Write(b []byte) (int, error) {
	w.n.Add(int64(len(b)))
	return w.ResponseWriter.Write(b)
}
