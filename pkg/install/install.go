// Package install writes a signed update bundle into the inactive slot
// (docs/design.md, rule 6), in the order that keeps a power cut at any point
// harmless:
//
//  1. the target slot gets priority 0 (slotstate.State.MarkBad), so that
//     a half-written slot is never chosen;
//  2. the payloads stream from the bundle in one pass, hashed as they go:
//     the root image and its verity tree straight into the slot's
//     partitions (labels abboot-root-SLOT, abboot-verity-SLOT), each
//     chunk read back from the device while the next ones are written
//     (readBack), then synced; and the UKI into a temporary file next to
//     EFI/abboot/SLOT.efi, synced; a payload whose hash does not match
//     stops the install at its end, and so does anything after the last
//     payload;
//  3. what landed is checked: the UKI read back against the manifest's
//     sha256, the top of the verity tree against the manifest's root hash
//     (what abboot's init checks before it sets up dm-verity), and the
//     UKI's signed command line must carry that same root hash (none for
//     an ESP-only bundle), or the slot would boot a kernel that looks for
//     another root;
//  4. the UKI is renamed into place and the directory synced;
//  5. the slot is activated: priority above the running slot and tries N
//     (slotstate.State.SetActive). With a root, the same GPT edit sets
//     the slot's root and verity partition UUIDs to the new root hash's
//     (Discoverable Partitions Specification: the first and last 128 bits
//     of the hash), which is how the init finds them, so no cut can leave
//     an active slot whose UKI looks for partitions that do not carry its
//     UUIDs yet.
//
// The running slot is never written: not its partitions, not its UKI, not
// its state bits (except that activating the target lowers the running
// slot's priority when the target cannot go above it, as SetActive does
// at priority 15). Everything that can be checked before the first write
// is: the slots, the tries, payload sizes against the partitions and the
// ESP's free space, a root hash that another partition's UUID already
// carries, and that the running slot stays bootable once the target is
// marked bad.
//
// Step 5 on the GPT store is done here and not by slotstore.GPT.Save,
// which edits attribute bits only: the UUIDs and the state bits must land
// in one edit (gpt.Disk.Edit). The bits are encoded as the store encodes
// them (gpt.WithSlotBits on the slots' root partitions, every other bit
// kept, including the store's counted marker, which SetActive does not
// change), and the store is read back afterwards to check that it sees
// exactly the state intended.
//
// The package does not check signatures or versions (bundle.NewReader
// with bundle.Policy does, before Install is called; SlotSizes gives the
// policy its size limits), mount or remount the ESP, download bundles or
// reboot.
package install

import (
	"bytes"
	"crypto/sha256"
	"debug/pe"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/spf13/afero"
	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
	"github.com/abboot/abboot/pkg/verity"
)

// Device is the disk that holds the slots' partitions: an *os.File of
// the whole disk or image, or a wrapper a test uses to fail writes.
type Device interface {
	io.ReaderAt
	io.WriterAt
	io.Seeker // to find the size: Seek(0, io.SeekEnd)
	io.Closer
	// Sync makes the writes so far durable.
	Sync() error
}

// Target is where a bundle goes.
type Target struct {
	// Slot is the slot to install into; it must not be Running.
	Slot    slot.Slot
	Running slot.Slot
	// Store holds the slot state. For a bundle with a root it must be
	// the GPT store of Disk (slotstore.Open gives it whenever the disk
	// has root partitions).
	Store slotstore.Store
	// ESPDir is where the ESP is mounted, read-write for the duration
	// of Install (the caller remounts it).
	ESPDir string
	// Disk is the whole disk or image that holds the slots' root and
	// verity partitions; "" for an ESP-only layout.
	Disk string

	// OpenDisk opens Disk for reading and writing; nil opens the file or
	// block device at Disk. Tests pass a wrapper that fails writes.
	OpenDisk func() (Device, error)
	// ESP is the ESP as a file system; nil is ESPDir on the OS's. Tests
	// pass a wrapper that fails writes.
	ESP afero.Fs
}

// Options tune an install.
type Options struct {
	// Tries is the number of tries the slot gets, 1..15; 0 means
	// slotstate.DefaultTries.
	Tries int
	// Progress, if set, is called as payload bytes are written.
	Progress func(done, total int64)
	// Log, if set, receives one event per step, with the signature of
	// event.Logger.Log: name "install" and key/value pairs, starting
	// with slot= and step=.
	Log func(name string, kv ...any)
}

// Result says what was installed.
type Result struct {
	Slot     slot.Slot
	Version  string          // the bundle's version
	RootHash string          // hex; "" for an ESP-only bundle
	Bytes    int64           // payload bytes written
	State    slotstate.State // the slot state saved at the end
}

// copyBufferSize is the size of the buffer payloads are copied through:
// large enough that a block device sees few, big writes.
const copyBufferSize = 4 << 20

// installer is one Install in progress.
type installer struct {
	r     *bundle.Reader
	t     Target
	o     Options
	m     bundle.Manifest
	tries int
	esp   afero.Fs
	// With a root: the device, its table, the slot's partitions by
	// payload name and the UUIDs the root hash gives them.
	dev      Device
	disk     *gpt.Disk
	parts    map[string]gpt.Partition
	rootHash []byte
	uuids    map[string]guid.GUID
	// bufs are the copy buffers (copyBuffers of them), then one for each
	// read-back worker, allocated once for all payloads.
	bufs  [][]byte
	total int64 // payload bytes in the bundle
	res   Result
}

// step is one step of Install, in the order of steps.
type step struct {
	name string
	run  func(*installer) error
}

// steps is Install, step by step (see the package comment). It is a
// variable so that a test can reorder it and see the power-cut test fail.
var steps = []step{
	{"mark-bad", (*installer).markBad},
	{"write", (*installer).write},
	{"verify", (*installer).verify},
	{"place-uki", (*installer).placeUKI},
	{"activate", (*installer).activate},
}

// Install writes the bundle r into t.Slot and activates it; see the
// package comment for the order of writes. r must come straight from
// bundle.NewReader, with no payload read yet. On error the running slot
// is as it was and the target slot, if it was written at all, has
// priority 0.
func Install(r *bundle.Reader, t Target, o Options) (Result, error) {
	in, err := prepare(r, t, o)
	if err != nil {
		return Result{}, fmt.Errorf("installing into slot %s: %w", t.Slot, err)
	}
	defer in.close()
	for _, s := range steps {
		if err := s.run(in); err != nil {
			in.cleanup()
			return Result{}, fmt.Errorf("installing version %s into slot %s: %s: %w", in.m.Version, t.Slot, s.name, err)
		}
	}
	return in.res, nil
}

// prepare makes every check that needs no write.
func prepare(r *bundle.Reader, t Target, o Options) (*installer, error) {
	for _, s := range []slot.Slot{t.Slot, t.Running} {
		if s != slot.A && s != slot.B {
			return nil, fmt.Errorf("slot %q: want a or b", s)
		}
	}
	if t.Slot == t.Running {
		return nil, fmt.Errorf("slot %s is the running slot", t.Slot)
	}
	tries := o.Tries
	if tries == 0 {
		tries = slotstate.DefaultTries
	}
	if tries < 1 || tries > slotstate.Max {
		return nil, fmt.Errorf("tries %d: want 1 to %d", o.Tries, slotstate.Max)
	}
	if t.Store == nil || t.ESPDir == "" {
		return nil, errors.New("no state store or no ESP directory")
	}
	m := r.Manifest
	in := &installer{r: r, t: t, o: o, m: m, tries: tries, esp: t.ESP}
	for range copyBuffers + readBackWorkers {
		in.bufs = append(in.bufs, make([]byte, copyBufferSize))
	}
	if in.esp == nil {
		in.esp = afero.NewBasePathFs(afero.NewOsFs(), t.ESPDir)
	}
	in.res = Result{Slot: t.Slot, Version: m.Version, RootHash: m.RootHash}
	for _, p := range m.Payloads {
		in.total += p.Size
	}
	sizes, err := SlotSizes(t)
	if err != nil {
		return nil, err
	}
	// The size half of bundle.Policy, again: the caller should have
	// refused an oversized bundle already, but writing past a partition
	// would overwrite the next one.
	if err := bundle.Policy(m.Compatible, m.Version, bundle.SlotSizes(sizes))(m); err != nil {
		return nil, err
	}
	if _, ok := t.Store.(*slotstore.GPT); m.RootHash != "" && !ok {
		return nil, fmt.Errorf("the bundle has a root, but the slot state is in %s, not in the GPT of %s", t.Store, t.Disk)
	}
	st, err := t.Store.Load()
	if err != nil {
		return nil, err
	}
	if a := st.MarkBad(t.Slot).Get(t.Running); !a.Bootable() {
		return nil, fmt.Errorf("the running slot %s is not bootable (%v): installing would leave no bootable slot; commit it first (abctl mark-good)", t.Running, a)
	}
	if m.RootHash != "" {
		if err := in.openDisk(); err != nil {
			in.close()
			return nil, err
		}
	}
	return in, nil
}

// openDisk opens the disk and finds the slot's partitions and the UUIDs
// its root hash gives them, refusing a root hash that another partition
// already carries: the init would find that one.
func (in *installer) openDisk() error {
	var err error
	if in.rootHash, err = hex.DecodeString(in.m.RootHash); err != nil || len(in.rootHash) != sha256.Size {
		return fmt.Errorf("root hash %q: want %d bytes of hex", in.m.RootHash, sha256.Size)
	}
	if in.dev, in.disk, err = openDisk(in.t, true); err != nil {
		return err
	}
	tab, err := in.disk.Read()
	if err != nil {
		return err
	}
	if in.parts, err = slotPartitions(tab, in.t.Slot); err != nil {
		return err
	}
	if in.parts == nil {
		return fmt.Errorf("%s has no partitions %s and %s", in.t.Disk, in.t.Slot.RootLabel(), in.t.Slot.VerityLabel())
	}
	rootUUID, verityUUID := verity.PartitionUUIDs(in.rootHash)
	in.uuids = map[string]guid.GUID{bundle.PayloadRoot: rootUUID, bundle.PayloadVerity: verityUUID}
	for name, u := range in.uuids {
		if p, ok := tab.ByUUID(u); ok && p.Number != in.parts[name].Number {
			return fmt.Errorf("partition %d (%s) already has UUID %s of root hash %s: is this root installed in the other slot?", p.Number, p.Name, u, in.m.RootHash)
		}
	}
	return nil
}

// openDisk opens t.Disk as a GPT disk.
func openDisk(t Target, writable bool) (Device, *gpt.Disk, error) {
	var dev Device
	var err error
	if t.OpenDisk != nil {
		dev, err = t.OpenDisk()
	} else {
		flag := os.O_RDONLY
		if writable {
			flag = os.O_RDWR
		}
		dev, err = os.OpenFile(t.Disk, flag, 0)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening disk: %w", err)
	}
	size, err := dev.Seek(0, io.SeekEnd)
	if err == nil {
		var d *gpt.Disk
		if d, err = gpt.OpenFile(dev, t.Disk, size, 0, writable); err == nil {
			return dev, d, nil
		}
	}
	dev.Close()
	return nil, nil, fmt.Errorf("opening disk %s: %w", t.Disk, err)
}

// slotPartitions returns slot s's root and verity partitions by payload
// name, nil when it has neither.
func slotPartitions(tab *gpt.Table, s slot.Slot) (map[string]gpt.Partition, error) {
	parts := map[string]gpt.Partition{}
	for name, label := range map[string]string{bundle.PayloadRoot: s.RootLabel(), bundle.PayloadVerity: s.VerityLabel()} {
		var found []gpt.Partition
		for _, p := range tab.Partitions {
			if p.Name == label {
				found = append(found, p)
			}
		}
		switch len(found) {
		case 1:
			parts[name] = found[0]
		case 0:
		default:
			return nil, fmt.Errorf("partitions %d and %d are both labelled %s", found[0].Number, found[1].Number, label)
		}
	}
	switch len(parts) {
	case 0:
		return nil, nil
	case 1:
		return nil, fmt.Errorf("slot %s has only one of the partitions %s and %s", s, s.RootLabel(), s.VerityLabel())
	}
	return parts, nil
}

// tempPath is where the UKI is written before it is renamed into place.
func tempPath(s slot.Slot) string { return s.UKIPath() + ".new" }

// statfs is unix.Statfs; a test replaces it, since the free space of a
// file system that other tests write to changes under it.
var statfs = unix.Statfs

// SlotSizes returns the space for each payload in slot t.Slot, for
// bundle.SlotSizes: the sizes of its root and verity partitions on
// t.Disk (none when the disk has neither, or t.Disk is ""), and for the
// UKI the free space on the ESP at t.ESPDir, plus what a temporary UKI
// left by an interrupted install takes (it is overwritten). The old UKI
// stays until the new one is complete, so its space does not count.
func SlotSizes(t Target) (map[string]int64, error) {
	var fsStat unix.Statfs_t
	if err := statfs(t.ESPDir, &fsStat); err != nil {
		return nil, fmt.Errorf("free space on the ESP at %s: %w", t.ESPDir, err)
	}
	free := int64(fsStat.Bavail) * fsStat.Bsize
	if fi, err := os.Stat(path.Join(t.ESPDir, tempPath(t.Slot))); err == nil {
		free += fi.Size()
	}
	sizes := map[string]int64{bundle.PayloadUKI: free}
	if t.Disk == "" {
		return sizes, nil
	}
	dev, d, err := openDisk(t, false)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	tab, err := d.Read()
	if err != nil {
		return nil, err
	}
	parts, err := slotPartitions(tab, t.Slot)
	if err != nil {
		return nil, err
	}
	for name, p := range parts {
		sizes[name] = p.Size(tab.SectorSize)
	}
	return sizes, nil
}

func (in *installer) log(step string, kv ...any) {
	if in.o.Log != nil {
		in.o.Log("install", append([]any{"slot", in.t.Slot, "step", step}, kv...)...)
	}
}

func (in *installer) close() {
	if in.dev != nil {
		in.dev.Close()
	}
}

// cleanup removes the temporary UKI after a failure; it is best effort,
// since a leftover is overwritten by the next install.
func (in *installer) cleanup() {
	in.esp.Remove(tempPath(in.t.Slot))
}

// markBad is step 1.
func (in *installer) markBad() error {
	st, err := in.t.Store.Load()
	if err != nil {
		return err
	}
	if err := in.t.Store.Save(st.MarkBad(in.t.Slot)); err != nil {
		return err
	}
	in.log("mark-bad", "priority", 0)
	return nil
}

// write is step 2: every payload, read to the end of the bundle.
func (in *installer) write() error {
	for {
		p, r, err := in.r.Next()
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		case p.Name == bundle.PayloadUKI:
			err = in.writeUKI(p, r)
		default:
			err = in.writePartition(p, r)
		}
		if err != nil {
			return err
		}
	}
}

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

// writePartition writes the root or verity payload at the start of its
// partition, reading it back as it goes, and syncs it. prepare checked
// that it fits.
func (in *installer) writePartition(p bundle.Payload, r io.Reader) error {
	part, ok := in.parts[p.Name]
	if !ok {
		return fmt.Errorf("payload %s has no partition", p.Name)
	}
	off := part.Start(in.disk.SectorSize())
	back := &readBack{dev: in.dev, base: off, name: p.Name}
	if err := in.copyPayload(io.NewOffsetWriter(in.dev, off), back, p, r); err != nil {
		return err
	}
	if err := in.dev.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", part.Name, err)
	}
	in.log(p.Name, "partition", part.Name, "bytes", p.Size)
	return nil
}

// writeUKI writes the UKI payload to the temporary file and syncs it.
func (in *installer) writeUKI(p bundle.Payload, r io.Reader) error {
	tmp := tempPath(in.t.Slot)
	if err := in.esp.MkdirAll(path.Dir(tmp), 0o755); err != nil {
		return err
	}
	f, err := in.esp.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	err = in.copyPayload(f, nil, p, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	in.log("uki", "file", tmp, "bytes", p.Size)
	return nil
}

// verify is step 3: read back what landed and check it.
func (in *installer) verify() error {
	if in.rootHash != nil {
		// The partitions were read back as they were written; what is
		// left is what the init checks before it sets up dm-verity, with
		// the partition sizes it sees.
		ss := in.disk.SectorSize()
		part := func(name string) *io.SectionReader {
			p := in.parts[name]
			return io.NewSectionReader(in.dev, p.Start(ss), p.Size(ss))
		}
		root := part(bundle.PayloadRoot)
		if err := verity.CheckRoot(root, root.Size(), part(bundle.PayloadVerity), in.rootHash); err != nil {
			return fmt.Errorf("checking root hash %s: %w", in.m.RootHash, err)
		}
	}
	f, err := in.esp.Open(tempPath(in.t.Slot))
	if err != nil {
		return err
	}
	defer f.Close()
	p := in.payload(bundle.PayloadUKI)
	if err := in.checkHash(p.Name, f, p.Size); err != nil {
		return err
	}
	got, err := ukiRootHash(f)
	if err != nil {
		return err
	}
	if got != in.m.RootHash {
		return fmt.Errorf("the UKI's command line has abboot.roothash=%q, the bundle's root hash is %q", got, in.m.RootHash)
	}
	in.log("verify", "result", "ok")
	return nil
}

// payload returns the manifest entry of the payload named name.
func (in *installer) payload(name string) bundle.Payload {
	for _, p := range in.m.Payloads {
		if p.Name == name {
			return p
		}
	}
	return bundle.Payload{}
}

// checkHash reads size bytes from r and compares their sha256 with the
// manifest's, and that nothing follows when r is a file.
func (in *installer) checkHash(name string, r io.Reader, size int64) error {
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.LimitReader(r, size+1), in.bufs[0])
	if err != nil {
		return fmt.Errorf("reading back %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("%s reads back as %d bytes, want %d", name, n, size)
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), in.payload(name).SHA256; got != want {
		return fmt.Errorf("%s reads back with sha256 %s, the manifest says %s", name, got, want)
	}
	return nil
}

// maxCmdline bounds the .cmdline section read; kernels take a few KiB.
const maxCmdline = 64 << 10

// ukiRootHash returns abboot.roothash from a UKI's .cmdline section, ""
// when it has none or no .cmdline.
func ukiRootHash(r io.ReaderAt) (string, error) {
	f, err := pe.NewFile(r)
	if err != nil {
		return "", fmt.Errorf("the UKI is not a PE image: %w", err)
	}
	s := f.Section(".cmdline")
	if s == nil {
		return "", nil
	}
	b, err := io.ReadAll(io.LimitReader(s.Open(), maxCmdline))
	if err != nil {
		return "", fmt.Errorf("reading the UKI's .cmdline: %w", err)
	}
	// The section's raw data is padded to the file alignment with NULs.
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	p, err := bootparam.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("the UKI's command line: %w", err)
	}
	return p.RootHash, nil
}

// placeUKI is step 4: rename the UKI into place and sync the directory,
// so that the rename is durable before the slot is activated.
func (in *installer) placeUKI() error {
	tmp, dst := tempPath(in.t.Slot), in.t.Slot.UKIPath()
	if err := in.esp.Rename(tmp, dst); err != nil {
		return err
	}
	d, err := in.esp.Open(path.Dir(dst))
	if err != nil {
		return err
	}
	defer d.Close()
	// Some file systems cannot sync a directory (EINVAL); FAT in
	// Linux can, and it is what makes the rename durable there.
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("syncing %s: %w", path.Dir(dst), err)
	}
	in.log("place-uki", "file", dst)
	return nil
}

// activate is step 5.
func (in *installer) activate() error {
	st, err := in.t.Store.Load()
	if err != nil {
		return err
	}
	next := st.SetActive(in.t.Slot, in.tries)
	if in.rootHash == nil {
		err = in.t.Store.Save(next)
	} else {
		err = in.activateRoot(next)
	}
	if err != nil {
		return err
	}
	in.res.State = next
	a := next.Get(in.t.Slot)
	kv := []any{"priority", a.Priority, "tries", a.Tries}
	if in.rootHash != nil {
		kv = append(kv, "roothash", in.m.RootHash)
	}
	in.log("activate", kv...)
	return nil
}

// activateRoot saves next and the slot's new partition UUIDs in one GPT
// edit, then reads the store back to check that it sees next.
func (in *installer) activateRoot(next slotstate.State) error {
	// Like the store's Save: heal a table a cut left half-edited
	// first; Edit refuses to write over the only good copy.
	if err := in.disk.Repair(); err != nil {
		return err
	}
	tab, err := in.disk.Read()
	if err != nil {
		return err
	}
	edits := map[int]gpt.PartitionEdit{}
	for _, s := range slot.All {
		p, ok := tab.ByName(s.RootLabel())
		if !ok {
			return fmt.Errorf("no partition %s", s.RootLabel())
		}
		a := next.Get(s)
		bits := gpt.WithSlotBits(p.Attributes, a.Priority, a.Tries, a.Successful)
		edits[p.Number] = gpt.PartitionEdit{Attributes: &bits}
	}
	for name, part := range in.parts {
		e := edits[part.Number]
		u := in.uuids[name]
		e.UUID = &u
		edits[part.Number] = e
	}
	if err := in.disk.Edit(edits); err != nil {
		return err
	}
	got, err := in.t.Store.Load()
	if err != nil {
		return err
	}
	if got != next {
		return fmt.Errorf("after the GPT edit %s reads %+v, want %+v", in.t.Store, got, next)
	}
	return nil
}
