// Package fetch opens an update bundle for streaming: a local file,
// standard input, or an HTTP(S) URL whose download resumes with a Range
// request (RFC 9110 §14) after a broken connection, so that a flaky link
// costs a retry rather than the whole download. OpenRange reads one byte
// range of a URL the same way, for a delta install that fetches only the
// blocks it lacks, and a download reads at random the same way (ReadAt),
// for a part of the bundle needed before its turn in the stream, which the
// stream then takes from there (Ahead). It does not otherwise cache, and
// does not verify or decompress: the bundle
// reader (and for ranges, the delta installer) checks what comes through.
package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Options tune a download.
type Options struct {
	Client  *http.Client  // default http.DefaultClient
	Retries int           // reconnects in a row that deliver nothing before giving up; default 5
	Backoff time.Duration // wait before the first reconnect, doubled each time; default 1s
	// ETag, for OpenRange, is the entity tag the resource must still
	// have (see ETag); "" accepts any.
	ETag string
}

// Open returns a reader for src: "-" is standard input, an http:// or
// https:// URL is downloaded, anything else is a file.
func Open(ctx context.Context, src string, o Options) (io.ReadCloser, error) {
	switch {
	case src == "-":
		return io.NopCloser(os.Stdin), nil
	case strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://"):
		return openHTTP(ctx, src, 0, -1, o)
	}
	return os.Open(src)
}

// ErrNoRange is returned when a server answers a Range request with the
// whole resource: it does not serve ranges, or (with Options.ETag) the
// resource changed. It wraps errors.ErrUnsupported, so that a reader of
// an io.ReaderAt that may be a download can tell "no random access here"
// from a failure without knowing this package.
var ErrNoRange = fmt.Errorf("the server did not answer with the range asked for (no range support, or the file changed): %w", errors.ErrUnsupported)

// OpenRange returns a reader of the n bytes at byte off of the HTTP(S)
// resource url, which resumes after a broken connection as Open's does.
// A server that answers with the whole resource is refused with
// ErrNoRange before a byte is read. With o.ETag set, the range is asked
// for only if the resource still has that entity tag (If-Range, RFC 9110
// §13.1.5), so that ranges fetched one after the other all come from the
// same version of it.
func OpenRange(ctx context.Context, url string, off, n int64, o Options) (io.ReadCloser, error) {
	if off < 0 || n <= 0 {
		return nil, fmt.Errorf("fetching %s: bad range of %d bytes at %d", url, n, off)
	}
	return openHTTP(ctx, url, off, n, o)
}

func openHTTP(ctx context.Context, url string, off, n int64, o Options) (*download, error) {
	if o.Client == nil {
		o.Client = http.DefaultClient
	}
	if o.Retries == 0 {
		o.Retries = 5
	}
	if o.Backoff == 0 {
		o.Backoff = time.Second
	}
	d := &download{ctx: ctx, url: url, o: o, start: off, size: n, etag: o.ETag, ranged: n >= 0}
	if err := d.connect(); err != nil {
		return nil, err
	}
	return d, nil
}

// download reads an HTTP resource, reconnecting where it broke off.
type download struct {
	ctx     context.Context
	url     string
	o       Options
	body    io.ReadCloser
	start   int64 // where the bytes asked for start in the resource
	ranged  bool  // only size bytes from start were asked for (OpenRange)
	off     int64 // bytes delivered so far
	size    int64 // bytes to deliver, -1 when the server did not say
	etag    string
	retries int   // reconnects so far
	stalled int   // reconnects in a row that delivered nothing
	mark    int64 // d.off at the last reconnect
	ahead   Ahead // what ReadAt read last
}

// connect requests the resource from d.off on. A resumed or ranged
// request must be answered with 206 and the same ETag, or the bytes would
// not fit together.
func (d *download) connect() error {
	req, err := http.NewRequestWithContext(d.ctx, http.MethodGet, d.url, nil)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", d.url, err)
	}
	pos := d.start + d.off
	if d.ranged || d.off > 0 {
		rg := "bytes=" + strconv.FormatInt(pos, 10) + "-"
		if d.ranged {
			rg += strconv.FormatInt(d.start+d.size-1, 10)
		}
		req.Header.Set("Range", rg)
		if d.etag != "" {
			req.Header.Set("If-Range", d.etag)
		}
	}
	resp, err := d.o.Client.Do(req)
	if err != nil {
		return fmt.Errorf("fetching %s: %w: %w", d.url, errTransient, err)
	}
	partial := req.Header.Get("Range") != ""
	switch {
	case !partial && resp.StatusCode == http.StatusOK:
		d.size, d.etag = resp.ContentLength, resp.Header.Get("ETag")
	case partial && resp.StatusCode == http.StatusPartialContent:
		if !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes "+strconv.FormatInt(pos, 10)+"-") {
			resp.Body.Close()
			return fmt.Errorf("fetching %s: resumed at the wrong place: Content-Range %q, want byte %d", d.url, resp.Header.Get("Content-Range"), pos)
		}
		if d.etag == "" {
			d.etag = resp.Header.Get("ETag")
		}
		// A range that runs past the end is cut short (RFC 9110
		// §14.1.1): expect what Content-Range says, "bytes a-b/len".
		var a, b int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/", &a, &b); d.ranged && err == nil && b >= a && b-a+1 < d.size-d.off {
			d.size = d.off + b - a + 1
		}
	case partial && resp.StatusCode == http.StatusOK:
		resp.Body.Close()
		return fmt.Errorf("fetching %s at byte %d: %w", d.url, pos, ErrNoRange)
	case resp.StatusCode >= 500:
		resp.Body.Close()
		return fmt.Errorf("fetching %s: %w: %s", d.url, errTransient, resp.Status)
	default:
		resp.Body.Close()
		return fmt.Errorf("fetching %s: %s", d.url, resp.Status)
	}
	d.body = resp.Body
	return nil
}

func (d *download) Read(p []byte) (int, error) {
	if d.size >= 0 {
		// A server may send more than the range asked for.
		if d.off == d.size {
			return 0, io.EOF
		}
		p = p[:min(int64(len(p)), d.size-d.off)]
		if at, ok := d.ahead.start(); ok && !d.ranged && at >= d.off {
			// The rest of the resource was read ahead (ReadAt): stop
			// the transfer there and take the rest from those bytes.
			if at > d.off {
				p = p[:min(int64(len(p)), at-d.off)]
			} else if b := d.ahead.Take(at, d.size-at); b != nil {
				d.body.Close()
				d.body = io.NopCloser(bytes.NewReader(b))
			}
		}
	}
	for {
		n, err := d.body.Read(p)
		d.off += int64(n)
		if err == nil || n > 0 && !errors.Is(err, io.EOF) {
			return n, nil
		}
		if errors.Is(err, io.EOF) && (d.size < 0 || d.off == d.size) {
			return n, io.EOF
		}
		// The connection broke (or ended early): reconnect from where
		// it stopped. Only reconnects that got nothing count against the
		// budget, so a long download over a flaky link still finishes.
		d.body.Close()
		if d.off > d.mark {
			d.stalled = 0
		}
		if d.stalled >= d.o.Retries || d.ctx.Err() != nil {
			return n, fmt.Errorf("fetching %s: broken at byte %d after %d reconnects, %d in a row without progress: %w", d.url, d.off, d.retries, d.stalled, err)
		}
		select {
		case <-time.After(d.o.Backoff << d.stalled):
		case <-d.ctx.Done():
			return n, d.ctx.Err()
		}
		d.retries++
		d.stalled++
		d.mark = d.off
		if cerr := d.connect(); errors.Is(cerr, errTransient) {
			// A reconnect that fails is one more that got nothing.
			d.body = failed{cerr}
		} else if cerr != nil {
			return n, cerr
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (d *download) Close() error { return d.body.Close() }

// ReadAt reads len(p) bytes at off of the resource d downloads, by a
// Range request of its own (OpenRange) asked only of the version d is
// downloading (its ETag), so that a bundle can be read ahead of its
// stream. A server without range support fails it with ErrNoRange. When
// what it read runs to the end of the resource (a bundle's UKI), the
// download takes it from there instead of fetching it again.
func (d *download) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	o := d.o
	o.ETag = d.etag
	r, err := OpenRange(d.ctx, d.url, off, int64(len(p)), o)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	n, err := io.ReadFull(r, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF // the resource ends within p
	}
	if err == nil || err == io.EOF {
		d.ahead.Keep(off, bytes.Clone(p[:n]))
	}
	return n, err
}

// errTransient marks a request that may work when tried again: the
// connection failed, or the server answered 5xx. A resumed download
// retries it within its budget; the first request does not.
var errTransient = errors.New("transient")

// failed is the body of a reconnect that failed: reading it returns why.
type failed struct{ err error }

func (f failed) Read([]byte) (int, error) { return 0, f.err }
func (f failed) Close() error             { return nil }

// ETag returns the entity tag the server gave r, if r is a download; ""
// when it gave none or r is a file.
func ETag(r io.Reader) string {
	if d, ok := r.(*download); ok {
		return d.etag
	}
	return ""
}

// Reconnects reports how many times r, if it is a download, had to
// resume; 0 for files.
func Reconnects(r io.Reader) int {
	if d, ok := r.(*download); ok {
		return d.retries
	}
	return 0
}
