package fetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// flaky serves content with range support, but cuts every connection
// after cut bytes.
func flaky(t *testing.T, content []byte, cut int, ranges bool) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := 0
		w.Header().Set("ETag", `"v1"`)
		if rg := r.Header.Get("Range"); rg != "" && ranges {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
			if err != nil {
				http.Error(w, "bad range", http.StatusBadRequest)
				return
			}
			start = n
			w.Header().Set("Content-Range", "bytes "+itoa(start)+"-"+itoa(len(content)-1)+"/"+itoa(len(content)))
			w.Header().Set("Content-Length", itoa(len(content)-start))
			w.WriteHeader(http.StatusPartialContent)
		} else {
			w.Header().Set("Content-Length", itoa(len(content)))
		}
		end := min(len(content), start+cut)
		w.Write(content[start:end])
		if end < len(content) {
			// Break the connection mid-body, after what was sent has
			// left: a reset could discard it in flight.
			if hj, ok := w.(http.Hijacker); ok {
				w.(http.Flusher).Flush()
				c, _, _ := hj.Hijack()
				c.Close()
			}
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// open opens url with a millisecond backoff, failing the test on error,
// and closes it when the test ends.
func open(t *testing.T, url string, o Options) io.ReadCloser {
	t.Helper()
	o.Backoff = time.Millisecond
	r, err := Open(context.Background(), url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestResume(t *testing.T) {
	content := make([]byte, 1<<20+123)
	rand.Read(content)
	s := flaky(t, content, 300<<10, true)
	r := open(t, s.URL, Options{})
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Fatalf("downloaded %d bytes that differ from the %d served", len(got), len(content))
	}
	// Each connection carries at most 300 KiB: at least three resumes.
	if n := Reconnects(r); n < 3 {
		t.Errorf("%d reconnects, want at least 3", n)
	}
}

func TestNoRangeSupport(t *testing.T) {
	content := make([]byte, 100<<10)
	s := flaky(t, content, 40<<10, false)
	r := open(t, s.URL, Options{})
	if _, err := io.ReadAll(r); !errors.Is(err, ErrNoRange) {
		t.Errorf("ReadAll = %v, want a resume error", err)
	}
}

func TestSlowButSteady(t *testing.T) {
	content := make([]byte, 100<<10)
	s := flaky(t, content, 1<<10, true)
	r := open(t, s.URL, Options{Retries: 2})
	// Every connection delivers 1 KiB, so the download progresses and
	// never runs out of reconnects.
	got, err := io.ReadAll(r)
	if err != nil || len(got) != len(content) {
		t.Errorf("ReadAll = %d bytes, %v; want all %d", len(got), err, len(content))
	}
}

func TestGiveUpWithoutProgress(t *testing.T) {
	// A server that drops every resumed request before sending a byte.
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == "" {
			w.Header().Set("Content-Length", "1000")
			w.Write(make([]byte, 10))
		} else {
			w.Header().Set("Content-Range", "bytes 10-999/1000")
			w.Header().Set("Content-Length", "990")
			w.WriteHeader(http.StatusPartialContent)
		}
		w.(http.Flusher).Flush()
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
	}))
	defer s.Close()
	r := open(t, s.URL, Options{Retries: 2})
	if _, err := io.ReadAll(r); err == nil || !strings.Contains(err.Error(), "2 in a row without progress") {
		t.Errorf("ReadAll = %v, want to give up after 2 reconnects without progress", err)
	}
}

// failEvery fails every other resumed request before it reaches the
// server, as a link that drops now and then does.
type failEvery struct{ n int }

func (f *failEvery) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Range") != "" {
		if f.n++; f.n%2 == 1 {
			return nil, errors.New("connection refused")
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestReconnectFails(t *testing.T) {
	content := make([]byte, 100<<10)
	rand.Read(content)
	s := flaky(t, content, 30<<10, true)
	c := &http.Client{Transport: &failEvery{}}
	r := open(t, s.URL, Options{Client: c, Retries: 2})
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("ReadAll = %d bytes, %v; want the %d served, failed reconnects retried", len(got), err, len(content))
	}

	// A link that never comes back uses up the budget.
	never := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Header.Get("Range") != "" {
			return nil, errors.New("connection refused")
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	r = open(t, s.URL, Options{Client: never, Retries: 2})
	if _, err := io.ReadAll(r); err == nil || !strings.Contains(err.Error(), "2 in a row without progress") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("ReadAll = %v, want to give up after 2 failed reconnects", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestErrors(t *testing.T) {
	s := httptest.NewServer(http.NotFoundHandler())
	defer s.Close()
	if _, err := Open(context.Background(), s.URL, Options{}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Open of a missing URL = %v", err)
	}
	if _, err := Open(context.Background(), filepath.Join(t.TempDir(), "missing"), Options{}); !os.IsNotExist(err) {
		t.Errorf("Open of a missing file = %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// ranges serves content with http.ServeContent (RFC 9110 ranges and
// If-Range) under ETag "v1", cutting each response after cut bytes
// (0: never), or without range support.
func ranges(t *testing.T, content []byte, cut int, ranged bool) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ranged {
			r.Header.Del("Range")
		}
		w.Header().Set("ETag", `"v1"`)
		if cut == 0 {
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(content))
			return
		}
		cw := &cutWriter{ResponseWriter: w, left: cut}
		http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(content))
		if cw.left == 0 {
			w.(http.Flusher).Flush()
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// cutWriter passes on at most left body bytes.
type cutWriter struct {
	http.ResponseWriter
	left int
}

func (c *cutWriter) Write(b []byte) (int, error) {
	n := min(len(b), c.left)
	c.ResponseWriter.Write(b[:n])
	c.left -= n
	if n < len(b) {
		return n, errors.New("cut")
	}
	return n, nil
}

func TestOpenRange(t *testing.T) {
	content := make([]byte, 1<<20)
	rand.Read(content)
	for _, tc := range []struct {
		name      string
		cut       int
		ranged    bool
		etag      string
		off, n    int64
		err       error
		reconnect bool
		want      int64 // bytes, if not n
	}{
		{name: "middle", ranged: true, off: 4096, n: 100 << 10},
		{name: "to the end", ranged: true, off: 1<<20 - 10, n: 10},
		{name: "past the end", ranged: true, off: 1<<20 - 10, n: 4096, want: 10},
		{name: "same etag", ranged: true, etag: `"v1"`, off: 1, n: 1},
		{name: "cut and resumed", cut: 30 << 10, ranged: true, off: 8192, n: 200 << 10, reconnect: true},
		{name: "no range support", off: 4096, n: 4096, err: ErrNoRange},
		{name: "changed", ranged: true, etag: `"v0"`, off: 4096, n: 4096, err: ErrNoRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ranges(t, content, tc.cut, tc.ranged)
			r, err := OpenRange(context.Background(), s.URL, tc.off, tc.n, Options{Backoff: time.Millisecond, ETag: tc.etag})
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("OpenRange = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, r)
			if tc.want != 0 {
				tc.n = tc.want
			}
			if !bytes.Equal(got, content[tc.off:tc.off+tc.n]) {
				t.Errorf("got %d bytes, not the %d at %d", len(got), tc.n, tc.off)
			}
			if n := Reconnects(r); (n > 0) != tc.reconnect {
				t.Errorf("%d reconnects, want some: %v", n, tc.reconnect)
			}
			if ETag(r) != `"v1"` {
				t.Errorf("ETag %q, want \"v1\"", ETag(r))
			}
		})
	}
}

// readAll reads r to its end and closes it.
func readAll(t *testing.T, r io.ReadCloser) []byte {
	t.Helper()
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadAt: a download reads ahead of its stream by range, and says
// errors.ErrUnsupported when the server has no range support.
func TestReadAt(t *testing.T) {
	content := make([]byte, 1<<20)
	rand.Read(content)
	type readAt struct {
		off     int64
		n, want int
		err     error
	}
	for name, tc := range map[string]readAt{
		"middle":       {off: 4096, n: 100 << 10, want: 100 << 10},
		"past the end": {off: 1<<20 - 10, n: 4096, want: 10, err: io.EOF},
		"no ranges":    {off: 4096, n: 4096, err: errors.ErrUnsupported},
	} {
		t.Run(name, func(t *testing.T) {
			r := open(t, ranges(t, content, 0, name != "no ranges").URL, Options{})
			p := make([]byte, tc.n)
			n, err := r.(io.ReaderAt).ReadAt(p, tc.off)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("ReadAt = %d, %v; want %v", n, err, tc.err)
			}
			if n != tc.want || !bytes.Equal(p[:n], content[tc.off:tc.off+int64(n)]) {
				t.Errorf("ReadAt read %d bytes (want %d), equal to the content's: %v", n, tc.want, bytes.Equal(p[:n], content[tc.off:tc.off+int64(n)]))
			}
			// The stream is not disturbed.
			if got := readAll(t, r); !bytes.Equal(got, content) {
				t.Errorf("the download after ReadAt: %d bytes, not the content", len(got))
			}
		})
	}
}

// TestReadAheadTail: when ReadAt read the resource's tail ahead of the
// stream (a bundle's UKI), the stream takes the tail from those bytes and
// does not fetch it again. The server's whole-resource answer carries a
// wrong tail, so a stream that fetched it again would not match; a read
// ahead that stops short of the end changes nothing.
func TestReadAheadTail(t *testing.T) {
	content := make([]byte, 1<<20)
	rand.Read(content)
	wrongTail := bytes.Clone(content)
	for i := range wrongTail[len(content)-64<<10:] {
		wrongTail[len(content)-64<<10+i] ^= 0xff
	}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		body := content
		if r.Header.Get("Range") == "" {
			body = wrongTail
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(s.Close)
	for name, tc := range map[string]struct {
		off, n int64
		want   []byte
	}{
		"the tail":         {off: 1<<20 - 64<<10, n: 64 << 10, want: content},
		"short of the end": {off: 1<<20 - 64<<10, n: 32 << 10, want: wrongTail},
	} {
		t.Run(name, func(t *testing.T) {
			r := open(t, s.URL, Options{})
			p := make([]byte, tc.n)
			if n, err := r.(io.ReaderAt).ReadAt(p, tc.off); n != len(p) || err != nil || !bytes.Equal(p, content[tc.off:tc.off+tc.n]) {
				t.Fatalf("ReadAt = %d, %v, or the wrong bytes", n, err)
			}
			if got := readAll(t, r); !bytes.Equal(got, tc.want) {
				t.Errorf("the stream after ReadAt is not what was expected (%d bytes)", len(got))
			}
		})
	}
}
