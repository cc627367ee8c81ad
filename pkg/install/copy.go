package install

import (
	"bytes"
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
		if len(c.b) > 0 {
			if _, err := w.WriteAt(c.b, off); err != nil {
				return fmt.Errorf("writing payload %s after %d bytes: %w", p.Name, off, err)
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
			if err := back.check(off-int64(len(c.b)), c.b, c.err == io.EOF); err != nil {
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
// was written"). A chunk is first written out and dropped from the page
// cache (sync_file_range(2), posix_fadvise(2) POSIX_FADV_DONTNEED), so
// that the read comes from the device, not from the cache the write just
// filled. With the payload's sha256 checked against the signed manifest
// at its end, this proves the partition holds the signed bytes, without a
// second pass over them after the write.
type readBack struct {
	dev  Device
	base int64 // the partition's offset on dev
	name string
	todo chan chunkAt
	wg   sync.WaitGroup // the workers
	// stopped is set when todo is closed.
	stopped bool

	mu  sync.Mutex
	err error // the first mismatch or read error
}

type chunkAt struct {
	off int64
	b   []byte
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
				if rb.failed() == nil && len(c.b) > 0 {
					if err := rb.compare(buf, c.off, c.b); err != nil {
						rb.mu.Lock()
						if rb.err == nil {
							rb.err = err
						}
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

// check queues the chunk b written at off; at the last chunk, it waits
// for every chunk to be checked. It returns the first error met so far,
// so that a copy stops soon after a chunk fails to read back.
func (rb *readBack) check(off int64, b []byte, last bool) error {
	if err := rb.failed(); err != nil {
		return err
	}
	if fd, ok := rb.fd(); ok && len(b) > 0 {
		// Start writing the chunk out now, so that it is on its way
		// while the chunks before it are read back. An error shows
		// again when compare waits for it.
		unix.SyncFileRange(fd, rb.base+off, int64(len(b)), unix.SYNC_FILE_RANGE_WRITE)
	}
	rb.todo <- chunkAt{off, b}
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
