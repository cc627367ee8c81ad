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
//     EFI/abboot/SLOT.efi (atomicfile); a payload whose hash does not match
//     stops the install at its end, and so does anything after the last
//     payload;
//  3. what landed is checked: the UKI read back against the manifest's
//     sha256, the top of the verity tree against the manifest's root hash
//     (what abboot's init checks before it sets up dm-verity), and the
//     UKI's signed command line must carry that same root hash (none for
//     an ESP-only bundle), or the slot would boot a kernel that looks for
//     another root;
//  4. the UKI replaces the old one: synced, renamed into place, the
//     directory synced (atomicfile.File.Commit);
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
// in one edit (gpt.Disk.Edit). The bits are the store's own edit
// (slotstore.Edits), and the store is read back afterwards to check that
// it sees exactly the state intended.
//
// With Options.CheckUKI (Secure Boot on), the UKI is read ahead and
// checked before step 1, so a UKI the firmware would refuse costs no
// write at all: by range when the bundle reads at random, else from a
// spool of the whole bundle, in a directory on neither the ESP nor the
// target slot's partitions.
//
// Files: install.go holds the steps; partitions.go finds the slot's
// partitions and sizes; ahead.go reads the UKI ahead for CheckUKI; copy.go
// the copy-and-read-back pipeline; uki.go the checks of the new UKI;
// state.go the activating GPT edit.
//
// The package does not check signatures or versions (bundle.NewReader
// with bundle.Policy does, before Install is called; SlotSizes gives the
// policy its size limits; whether a UKI is trusted is CheckUKI's), mount or remount the ESP, download bundles or
// reboot.
package install

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	"github.com/spf13/afero"

	"github.com/abboot/abboot/pkg/atomicfile"
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

	// CheckUKI, if set, is asked about the bundle's UKI before anything
	// is written; its error stops the install there (abctl passes
	// Secure Boot's check against db and dbx, docs/design.md "Verified
	// boot chain"). The UKI comes last in the bundle: it is read ahead
	// from Bundle, or the bundle is spooled into SpoolDir first.
	CheckUKI func(uki []byte) error
	// Bundle is the bundle r reads, opened for random access: a file,
	// or an HTTP source that reads by range. Nil, or a ReadAt failing
	// with errors.ErrUnsupported (a server without range support), has
	// CheckUKI's bundle spooled.
	Bundle io.ReaderAt
	// InPlace, if set, says which bytes of the root payload the target's
	// root partition already holds at the same offset, checked by the
	// caller against the signed tree (delta.Source.InPlace): whether the
	// bytes from off on are in place, and for how many bytes that holds.
	// Those bytes are neither written nor read back; the rest of the
	// partition is written as always. It is asked only about bytes
	// already read from the bundle.
	InPlace func(off int64) (bool, int64)
	// SpoolDir is where a bundle is spooled for CheckUKI: a directory on
	// neither the ESP nor a slot partition (a tmpfs, a data partition)
	// with room for the whole bundle; "" refuses such a bundle.
	SpoolDir string
}

// Result says what was installed.
type Result struct {
	Slot     slot.Slot
	Version  string          // the bundle's version
	RootHash string          // hex; "" for an ESP-only bundle
	Bytes    int64           // payload bytes installed
	InPlace  int64           // of Bytes, root bytes in place already, not written
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
	bufs [][]byte
	// spooled is the bundle spooled for Options.CheckUKI, if it was.
	spooled *os.File
	// uki is the new UKI, from step 2 until step 4 commits it.
	uki   *atomicfile.File
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
	if err := in.checkUKI(); err != nil {
		in.close()
		return nil, err
	}
	return in, nil
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
	if in.spooled != nil {
		in.spooled.Close()
	}
}

// cleanup drops the new UKI after a failure; it is best effort, since a
// leftover is overwritten by the next install.
func (in *installer) cleanup() {
	if in.uki != nil {
		in.uki.Abort()
	}
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

// writePartition writes the root or verity payload at the start of its
// partition, reading it back as it goes, and syncs it. prepare checked
// that it fits. The sync reports a failed write-back of this partition
// here, by name; durability alone would not need it, since activate's
// first GPT fsync, on the same device, comes before the primary table
// makes the slot active (so no power-cut test fails without it).
func (in *installer) writePartition(p bundle.Payload, r io.Reader) error {
	part, ok := in.parts[p.Name]
	if !ok {
		return fmt.Errorf("payload %s has no partition", p.Name)
	}
	off := part.Start(in.disk.SectorSize())
	back := &readBack{dev: in.dev, base: off, name: p.Name, placed: &in.res.InPlace}
	if p.Name == bundle.PayloadRoot {
		back.inPlace = in.o.InPlace
	}
	if err := in.copyPayload(io.NewOffsetWriter(in.dev, off), back, p, r); err != nil {
		return err
	}
	if err := in.dev.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", part.Name, err)
	}
	kv := []any{"partition", part.Name, "bytes", p.Size}
	if back.inPlace != nil {
		kv = append(kv, "in_place_bytes", in.res.InPlace)
	}
	in.log(p.Name, kv...)
	return nil
}

// writeUKI writes the UKI payload to its replacement file (atomicfile),
// which placeUKI commits.
func (in *installer) writeUKI(p bundle.Payload, r io.Reader) error {
	dst := in.t.Slot.UKIPath()
	if err := in.esp.MkdirAll(path.Dir(dst), 0o755); err != nil {
		return err
	}
	var err error
	if in.uki, err = atomicfile.Create(in.esp, dst, 0o644); err != nil {
		return err
	}
	if err := in.copyPayload(in.uki, nil, p, r); err != nil {
		return fmt.Errorf("writing %s: %w", tempPath(in.t.Slot), err)
	}
	in.log("uki", "file", tempPath(in.t.Slot), "bytes", p.Size)
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
	if in.uki == nil {
		return errors.New("the bundle has no UKI")
	}
	p := in.payload(bundle.PayloadUKI)
	if err := in.checkHash(p.Name, io.NewSectionReader(in.uki, 0, p.Size+1), p.Size); err != nil {
		return err
	}
	got, err := ukiRootHash(in.uki)
	if err != nil {
		return err
	}
	if got != in.m.RootHash {
		return fmt.Errorf("the UKI's command line has abboot.roothash=%q, the bundle's root hash is %q", got, in.m.RootHash)
	}
	in.log("verify", "result", "ok")
	return nil
}

// placeUKI is step 4: the new UKI replaces the old one, durably
// (atomicfile.File.Commit: synced, renamed, directory synced), before the
// slot is activated.
func (in *installer) placeUKI() error {
	if err := in.uki.Commit(); err != nil {
		return err
	}
	in.log("place-uki", "file", in.t.Slot.UKIPath())
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
