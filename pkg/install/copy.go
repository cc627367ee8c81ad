package install

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/bundle"
)

// copyBuffers is how many copy buffers are in flight: one being read
// (and hashed), one being written, up to readBackWorkers being read back,
// one queued.
const copyBuffers = readBackWorkers + 3

// readBackWorkers read back chunks at the same time: the device serves
// several reads and write-outs at once better than one after the other
// (bench/install.sh: three make the installer about 10% faster than one;
// more gain nothing).
const readBackWorkers = 3

// copyPayload copies a payload to w at offset 0; the payload reader's
// hash check surfaces as the error at its end. Reading (which hashes),
// writing and, when back is set, reading back what was written run at
// the same time on a few buffers, so an install costs about one pass over
// the bytes rather than a hash pass, a write pass and a read-back pass.
func (in *installer) copyPayload(w io.WriterAt, back *readBack, p bundle.Payload, r io.Reader) error {
	type chunk struct {
		b   []byte
		err error
	}
	full, free := make(chan chunk, 1), make(chan []byte, copyBuffers)
	for _, b := range in.bufs[:copyBuffers] {
		free <- b
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			var b []byte
			select {
			case b = <-free:
			case <-done:
				return
			}
			n, err := io.ReadFull(r, b)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			select {
			case full <- chunk{b[:n], err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	if back != nil {
		back.start(free, in.bufs[copyBuffers:])
		// After an error, the workers may still be reading the device,
		// which the caller closes next.
		defer back.wait()
	}
	var off int64
	for c := range full {
		var spans []span
		if len(c.b) > 0 {
			spans = back.toWrite(off, len(c.b))
			for _, s := range spans {
				if _, err := w.WriteAt(c.b[s[0]:s[1]], off+int64(s[0])); err != nil {
					return fmt.Errorf("writing payload %s after %d bytes: %w", p.Name, off+int64(s[0]), err)
				}
			}
			off += int64(len(c.b))
			in.res.Bytes += int64(len(c.b))
			if in.o.Progress != nil {
				in.o.Progress(in.res.Bytes, in.total)
			}
		}
		switch {
		case c.err != nil && c.err != io.EOF:
			return fmt.Errorf("writing payload %s after %d bytes: %w", p.Name, off, c.err)
		case back != nil:
			if err := back.check(chunkAt{off - int64(len(c.b)), c.b, spans}, c.err == io.EOF); err != nil {
				return err
			}
		default:
			free <- c.b[:cap(c.b)]
		}
		if c.err == io.EOF {
			return nil
		}
	}
	return nil
}

// readBack checks, while the copy goes on, that each chunk written to a
// partition reads back from the device as written (rule 6: "verify what
// was written"). Bytes that Options.InPlace says are in place are
// neither written nor read back: their caller read them from the device
// and checked them against the signed tree, which is what a read-back
// would prove. A chunk is first written out and dropped from the page
// cache (sync_file_range(2), posix_fadvise(2) POSIX_FADV_DONTNEED), so
// that the read comes from the device, not from the cache the write just
// filled. With the payload's sha256 checked against the signed manifest
// at its end, this proves the partition holds the signed bytes, without a
// second pass over them after the write.
type readBack struct {
	dev  Device
	base int64 // the partition's offset on dev
	name string
	// inPlace is Options.InPlace for the root payload, else nil.
	inPlace func(off int64) (bool, int64)
	// placed counts the bytes inPlace spared.
	placed *int64
	todo   chan chunkAt
	wg     sync.WaitGroup // the workers
	// stopped is set when todo is closed.
	stopped bool

	mu  sync.Mutex
	err error // the first mismatch or read error
}

// chunkAt is a chunk of a payload at off, of which the spans were
// written.
type chunkAt struct {
	off   int64
	b     []byte
	spans []span
}

// span is a part [lo, hi) of a chunk.
type span [2]int

// toWrite returns the spans of the n bytes at off of the payload that
// are not in place: all of them, without Options.InPlace. A nil rb
// (the UKI) writes all.
func (rb *readBack) toWrite(off int64, n int) []span {
	if rb == nil || rb.inPlace == nil {
		return []span{{0, n}}
	}
	var spans []span
	for at := 0; at < n; {
		placed, run := rb.inPlace(off + int64(at))
		end := at + int(min(run, int64(n-at)))
		if run <= 0 {
			// A caller's bug; writing is always safe.
			placed, end = false, n
		}
		if placed {
			*rb.placed += int64(end - at)
		} else if k := len(spans) - 1; k >= 0 && spans[k][1] == at {
			spans[k][1] = end
		} else {
			spans = append(spans, span{at, end})
		}
		at = end
	}
	return spans
}

// start starts a worker for each buffer to read back into; checked
// chunks go to free.
func (rb *readBack) start(free chan<- []byte, bufs [][]byte) {
	rb.todo = make(chan chunkAt, 1)
	for _, buf := range bufs {
		rb.wg.Add(1)
		go func() {
			defer rb.wg.Done()
			for c := range rb.todo {
				for _, s := range c.spans {
					if rb.failed() != nil {
						break
					}
					if err := rb.compare(buf, c.off+int64(s[0]), c.b[s[0]:s[1]]); err != nil {
						rb.mu.Lock()
						rb.err = cmp.Or(rb.err, err)
						rb.mu.Unlock()
					}
				}
				free <- c.b[:cap(c.b)]
			}
		}()
	}
}

// failed returns the first error a worker met, if any yet.
func (rb *readBack) failed() error {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.err
}

// check queues the chunk c; at the last chunk, it waits for every chunk
// to be checked. It returns the first error met so far, so that a copy
// stops soon after a chunk fails to read back.
func (rb *readBack) check(c chunkAt, last bool) error {
	if err := rb.failed(); err != nil {
		return err
	}
	if fd, ok := rb.fd(); ok {
		// Start writing the chunk out now, so that it is on its way
		// while the chunks before it are read back. An error shows
		// again when compare waits for it.
		for _, s := range c.spans {
			unix.SyncFileRange(fd, rb.base+c.off+int64(s[0]), int64(s[1]-s[0]), unix.SYNC_FILE_RANGE_WRITE)
		}
	}
	rb.todo <- c
	if !last {
		return nil
	}
	rb.wait()
	return rb.failed()
}

// wait ends the workers once the queue is drained and waits for them.
func (rb *readBack) wait() {
	if !rb.stopped {
		rb.stopped = true
		close(rb.todo)
	}
	rb.wg.Wait()
}

// fd is the device's file descriptor; a wrapper without one (a test's
// in-memory disk) is read back from what it holds.
func (rb *readBack) fd() (int, bool) {
	f, ok := rb.dev.(interface{ Fd() uintptr })
	if !ok {
		return -1, false
	}
	return int(f.Fd()), true
}

// compare reads back into buf the chunk b written at off.
func (rb *readBack) compare(buf []byte, off int64, b []byte) error {
	at, n := rb.base+off, int64(len(b))
	if fd, ok := rb.fd(); ok {
		if err := unix.SyncFileRange(fd, at, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER); err != nil {
			return fmt.Errorf("writing out %s at byte %d: %w", rb.name, off, err)
		}
		// Advice: if the kernel keeps the pages, the read below checks
		// the cache, which is what the write left there.
		unix.Fadvise(fd, at, n, unix.FADV_DONTNEED)
	}
	got := buf[:n]
	if _, err := rb.dev.ReadAt(got, at); err != nil {
		return fmt.Errorf("reading back the %s at byte %d: %w", rb.name, off, err)
	}
	if !bytes.Equal(got, b) {
		return fmt.Errorf("reading back the %s: the %d bytes at byte %d differ from what was written", rb.name, n, off)
	}
	return nil
}
