package install

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/delta"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/fetch"
	"github.com/abboot/abboot/pkg/secureboot"
	"github.com/abboot/abboot/pkg/slot"
)

// signed is v with its UKI signed by ks's db key, bundled again.
func (f *fixture) signed(t *testing.T, v *version, ks *secureboot.KeySet) *version {
	t.Helper()
	s := *v
	var err error
	if s.uki, err = secureboot.Sign(v.uki, ks.DB); err != nil {
		t.Fatal(err)
	}
	s.pack(t, f.key)
	f.known[sum(s.uki)] = s.name
	return &s
}

// source is a way a bundle reaches the installer: it returns the stream
// and what Options.Bundle gets (nil for none).
type source func(t *testing.T, b []byte) (io.Reader, io.ReaderAt)

// serve serves b over HTTP, with range support or without it.
func serve(t *testing.T, b []byte, ranges bool) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ranges {
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
			return
		}
		w.Write(b) // 200 and the whole of it, whatever was asked
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// sources are the ways abctl install reads a bundle: a file, a URL by
// delta (delta.Source) or as a download (fetch.Open), each with and
// without range support on the server, and stdin; the name says whether
// the UKI can be read ahead by range or the bundle must be spooled.
var sources = map[string]source{
	"file, range": func(t *testing.T, b []byte) (io.Reader, io.ReaderAt) {
		return bytes.NewReader(b), bytes.NewReader(b)
	},
	"delta, range": func(t *testing.T, b []byte) (io.Reader, io.ReaderAt) { return openDelta(t, serve(t, b, true)) },
	"delta, spool": func(t *testing.T, b []byte) (io.Reader, io.ReaderAt) {
		return openDelta(t, serve(t, b, false))
	},
	"download, range": func(t *testing.T, b []byte) (io.Reader, io.ReaderAt) { return openURL(t, serve(t, b, true)) },
	"download, spool": func(t *testing.T, b []byte) (io.Reader, io.ReaderAt) {
		return openURL(t, serve(t, b, false))
	},
	"stdin, spool": func(t *testing.T, b []byte) (io.Reader, io.ReaderAt) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() { w.Write(b); w.Close() }()
		t.Cleanup(func() { r.Close() })
		return r, nil // as abctl has it: fetch.Open("-") is no io.ReaderAt
	},
}

func openDelta(t *testing.T, url string) (io.Reader, io.ReaderAt) {
	ds, err := delta.Open(context.Background(), url, delta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	return ds, ds
}

func openURL(t *testing.T, url string) (io.Reader, io.ReaderAt) {
	r, err := fetch.Open(context.Background(), url, fetch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, r.(io.ReaderAt)
}

// spoolDir returns a directory on another file system than t.TempDir()'s,
// where the fixture's ESP is, or skips the test.
func spoolDir(t *testing.T) string {
	var a, b unix.Stat_t
	dir, err := os.MkdirTemp("/dev/shm", "abboot-spool-")
	if err == nil {
		t.Cleanup(func() { os.RemoveAll(dir) })
		err = unix.Stat(dir, &a)
	}
	if err == nil {
		err = unix.Stat(t.TempDir(), &b)
	}
	if err != nil || a.Dev == b.Dev {
		t.Skipf("no file system for the spool apart from the test's (%v)", err)
	}
	return dir
}

// TestSecureBootSources: with CheckUKI (Secure Boot on), a bundle whose
// UKI is unsigned, or signed by a key not in db, is refused with one line
// before anything is written, from every source: read ahead by range, or
// spooled outside the ESP when the source only streams. A bundle signed
// by db's key installs from each.
func TestSecureBootSources(t *testing.T) {
	f := newFixture(t, true)
	ks, err := secureboot.GenerateKeySet("install test")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := secureboot.GenerateKeySet("foreign")
	if err != nil {
		t.Fatal(err)
	}
	good, other := f.signed(t, f.v2, ks), f.signed(t, f.v2, foreign)
	db := &secureboot.Database{Certs: []*x509.Certificate{ks.DB.Cert}}
	check := secureboot.HandoverCheck(&secureboot.Firmware{SecureBoot: true, DB: db}, nil)
	spool := spoolDir(t)
	for name, src := range sources {
		for _, tc := range []struct {
			name string
			v    *version
			want string // in the error; "" for an install
		}{
			{"unsigned", f.v2, "image is not signed"},
			{"foreign", other, `signer "CN=foreign db"`},
			{"signed", good, ""},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				m := f.base.clone(t)
				before := m.snapshot(t)
				tg := m.target(t, slot.B, nil)
				in, ra := src(t, tc.v.bundle)
				r, err := bundle.NewReader(in, f.keys, nil)
				if err != nil {
					t.Fatal(err)
				}
				if ds, ok := in.(*delta.Source); ok { // as abctl plans it
					seeds, c, err := delta.SlotSeeds(m.disk, slot.A, slot.B)
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					if err := ds.Plan(r, seeds); err != nil {
						t.Fatal(err)
					}
				}
				var events []string
				log := func(name string, kv ...any) { events = append(events, event.Format(name, kv...)) }
				_, err = Install(r, tg, Options{CheckUKI: check, Bundle: ra, SpoolDir: spool, Log: log})
				if tc.want == "" {
					if err != nil {
						t.Fatal(err)
					}
					how := name[strings.LastIndex(name, " ")+1:]
					if !strings.Contains(strings.Join(events, "\n"), "step=check-uki read="+how) {
						t.Errorf("the UKI was not read by %s:\n%s", how, strings.Join(events, "\n"))
					}
					if bad := f.installed(t, m, tc.v); len(bad) > 0 {
						t.Error(bad)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
					t.Errorf("Install: %v; want one line saying %q", err, tc.want)
				}
				if after := m.snapshot(t); !reflect.DeepEqual(after, before) {
					t.Errorf("a refused install changed the machine")
				}
			})
		}
	}
	if ents, err := os.ReadDir(spool); err != nil || len(ents) > 0 {
		t.Errorf("spool directory after the installs: %v, %v; want it empty", ents, err)
	}
}

// TestSpoolRefused: a bundle that only streams is refused, and nothing
// written, when it cannot be spooled where it may: no spool directory, one
// on the ESP's file system, one without room for the bundle.
func TestSpoolRefused(t *testing.T) {
	f := newFixture(t, true)
	pass := func([]byte) error { return nil }
	full := t.TempDir()
	defer func(f func(string, *unix.Statfs_t) error) { statfs = f }(statfs)
	statfs = func(path string, st *unix.Statfs_t) error {
		err := unix.Statfs(path, st)
		if path == full {
			st.Bavail, st.Bsize = 10, 4096
		}
		return err
	}
	for _, tc := range []struct {
		name string
		dir  func(m *machine) string
		want string
	}{
		{"none", func(*machine) string { return "" }, "no spool directory is set"},
		{"on the ESP", func(m *machine) string { return m.espDir }, "is on the ESP's file system"},
		{"full", func(*machine) string { return full }, "MiB free, the bundle is 1 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := f.base.clone(t)
			before := m.snapshot(t)
			r, err := bundle.NewReader(io.MultiReader(bytes.NewReader(f.v2.bundle)), f.keys, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Install(r, m.target(t, slot.B, nil), Options{CheckUKI: pass, SpoolDir: tc.dir(m)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Install: %v; want a refusal saying %q", err, tc.want)
			}
			if after := m.snapshot(t); !reflect.DeepEqual(after, before) {
				t.Errorf("a refused install changed the machine")
			}
		})
	}
}
